"""The ImageNet path (images on disk, DataLoader workers, device-side policies) end to
end, on a tiny ImageFolder of random pictures."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from custom_datasets.sources import load_imagenet
from custom_models import run_files

ROOT = Path(__file__).resolve().parents[1]


def write_folder(root: Path, per_class: int = 12, classes=("n01", "n02")):
    from PIL import Image
    generator = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            folder = root / "ImageNet" / split / name
            folder.mkdir(parents=True)
            for i in range(per_class if split == "train" else 3):
                pixels = generator.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_the_valid_view_of_the_train_set_is_the_plain_centre_crop(tmp_path):
    write_folder(tmp_path)
    data = load_imagenet(tmp_path)
    image, label, index = data.train_plain[5]
    again, _, _ = data.train_plain[5]
    assert (label, index) == (0, 5) and image.shape == (3, 224, 224)
    assert torch.equal(image, again)  # no random crop or flip in the valid view
    assert data.train_plain.folder is data.train.folder  # one scan of the folder


def test_imagenet_configuration_trains_end_to_end_from_an_image_folder(tmp_path):
    write_folder(tmp_path)
    command = [sys.executable, str(ROOT / "implicit-augment.py"), "--dataset", "ImageNet",
               "--epochs", "2", "--hyper-start", "0", "--workers", "0", "--no-cuda",
               "--aug-model", "SEP", "--los-model", "BOTH", "--hyper-opt", "HES",
               "--data", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert result.returncode == 0, result.stderr
    folder = run_files.run_dir(tmp_path, "ImageNet", "run0")
    name = run_files.run_name("resnet18", "HES", "SEP", "BOTH", 1, 1.0, 0.0)
    results = run_files.load_results(run_files.results_path(folder, name))
    assert results["split"]["train_size"] + results["split"]["valid_size"] == 24
    assert results["split"]["valid_size"] == round(24 * 256233 / 1281167)
    assert len(results["final"]["per_class_acc"]) == 1000
    assert len(results["hyper_diagnostics"]) == 1  # one hyper epoch (epoch 2)
    checkpoint = run_files.load_torch(run_files.best_checkpoint_path(folder, name))
    assert checkpoint["reweight_state_dict"]["soft_logits"].shape == (24, 1000)
    assert checkpoint["augment_state_dict"]["probability_logits"].shape == (24, 7)
    # the hyper epoch moved the rows of the train images, and only those
    split = run_files.load_torch(folder / run_files.split_file_name(1, 1.0, 0.0))
    last = run_files.load_torch(run_files.last_checkpoint_path(folder, name))
    weights = last["reweight_state_dict"]["weight_logits"]
    assert bool((weights[split[1]] != 0).all()) and bool((weights[split[0]] == 0).all())
