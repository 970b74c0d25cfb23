"""The ablations of docs/design.md §7: --overfit validates hyper steps on the test set,
--oversplit trains and validates on the whole official train set."""

import torch

from custom_runs import run_files


def run_ablation(run_script, tmp_path, flag):
    # one full hyper epoch reaches every row only if its loader keeps the short last batch
    # (the paper's text; the released code drops it)
    result = run_script("implicit-augment.py", "--dataset", "DIGITS", "--epochs", "2", "--hyper-start", "0",
                        "-nr", "0.2", "--los-model", "WGHT", "--hyper-opt", "HES", "--no-cuda", flag,
                        "--paper-text", "last-batch", "--data", tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    folder = run_files.run_dir(tmp_path, "DIGITS", "run0")
    name = run_files.run_name("resnet18", "HES", "NONE", "WGHT", 1, 1.0, 0.2,
                              overfit=flag == "--overfit", oversplit=flag == "--oversplit",
                              paper_text=["last-batch"])
    assert name.startswith(flag[2:] + "_resnet18_opt_HES")
    valid, train, _ = run_files.load_torch(folder / run_files.split_file_name(1, 1.0, 0.2))
    last = run_files.load_torch(run_files.last_checkpoint_path(folder, name))
    results = run_files.load_results(run_files.results_path(folder, name))
    return last["reweight_state_dict"]["weight_logits"], valid, train, last, results


def test_overfit_learns_only_train_rows_and_selects_on_the_test_set(tmp_path, run_script):
    weights, valid, train, _, results = run_ablation(run_script, tmp_path, "--overfit")
    assert bool((weights[train] != 0).all())
    assert bool((weights[valid] == 0).all())
    # its validation data is the test set: the test pass gives the validation numbers
    assert all((h["valid_acc"], h["valid_loss"]) == (h["test_acc"], h["test_loss"])
               for h in results["history"])
    assert results["timings_s"]["valid"] < 0.01


def test_oversplit_learns_every_row_and_selects_on_the_whole_train_set_with_true_labels(tmp_path, run_script):
    weights, valid, train, last, results = run_ablation(run_script, tmp_path, "--oversplit")
    assert len(valid) + len(train) == len(weights) == 1437
    assert bool((weights != 0).all())
    from custom_common.settings import get_settings
    from custom_datasets.sources import load_digits
    from custom_models.networks import build_network
    from custom_transforms.base import EvalTransform
    digits, settings = load_digits(), get_settings("DIGITS")
    encoder, decoder = build_network("resnet18", settings)
    encoder.load_state_dict(last["encoder_state_dict"])
    decoder.load_state_dict(last["decoder_state_dict"])
    encoder.eval()
    amp = results["compute_path"]["precision"] == "bf16"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        features = encoder(EvalTransform(settings)(digits.train_images))
    predictions = decoder(features.float()).argmax(-1)
    accuracy = 100.0 * float((predictions == digits.train_targets).double().mean())
    assert abs(accuracy - results["history"][-1]["valid_acc"]) <= 100.0 / 1437 + 1e-9


def test_plot_debug_writes_a_grid_of_original_and_augmented_images(tmp_path, run_script):
    import matplotlib.image
    for method in ("AUTO", "SEP"):
        result = run_script("implicit-augment.py", "--dataset", "DIGITS", "--epochs", "1", "--aug-model",
                            method, "--plot-debug", "--no-cuda", "--data", tmp_path, timeout=300)
        assert result.returncode == 0, result.stderr
        folder = run_files.run_dir(tmp_path, "DIGITS", "run0")
        name = run_files.run_name("resnet18", "NONE", method, "NONE", 1, 1.0, 0.0)
        grid = matplotlib.image.imread(run_files.debug_grid_path(folder, name))
        height, width = grid.shape[:2]
        assert (height, width) == (850, 800)  # 8 x 8.5 inches at 100 dpi, two panels
        top, bottom = grid[: height // 2], grid[height // 2:]
        assert float(abs(top[..., :3] - bottom[..., :3]).mean()) > 0.01  # augmentation changed them
