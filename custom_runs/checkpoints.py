"""A run's checkpoint as a network again: the encoder and decoder that a best_, bestvalid_
or last_ file holds (their names and contents: custom_runs/run_files.py)."""
from pathlib import Path

import torch

from custom_runs import run_files


def load_network(checkpoint: dict, model: str, settings, device: torch.device, path: Path,
                 text_wide_block: bool = False):
    """(encoder, decoder) of a checkpoint, in eval mode (batch-norm running statistics).
    text_wide_block: the run had `--paper-text wrn-block` (same weights, other strides)."""
    from custom_models.networks import build_network
    encoder, decoder = build_network(model, settings, text_wide_block)
    try:
        # a torch.compile'd encoder saves its weights under "_orig_mod."
        encoder.load_state_dict({key.replace("_orig_mod.", "", 1): value
                                 for key, value in checkpoint["encoder_state_dict"].items()})
        decoder.load_state_dict(checkpoint["decoder_state_dict"])
    except (KeyError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0]
        raise run_files.UnreadableFile(f"{path} does not hold a {model} network for "
                                       f"{settings.name} ({first}); pass the --model it was "
                                       f"trained with") from None
    return encoder.to(device).eval(), decoder.to(device).eval()
