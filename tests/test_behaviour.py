"""End-to-end behaviour on real data: with heavy label noise, HES learns loss
weights that rank the mislabelled train samples below the clean ones.

One short run of implicit-augment.py on the embedded DIGITS data (about 20 s
on 2 CPU cores). With 8 epochs and half of the labels re-drawn, the learned
weights' AUROC (clean vs noisy) was 0.85-0.91 over run0..run7 (run0: 0.91);
the threshold 0.7 leaves a wide margin while being far from chance (0.5).
Fewer epochs help here: the longer the network trains on the noisy labels,
the more it fits them and the weaker the hypergradient's signal becomes
(30 epochs at 30 % noise gave 0.71-0.75).
"""
import json
import math

import numpy as np
import pytest
import torch

from custom_datasets.sources import load_digits
from custom_runs import run_files

NOISE_RATIO = 0.5
EPOCHS = 8
AUROC_THRESHOLD = 0.7


def pairwise_auroc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """P(positive > negative) + ½ P(tie), by comparing every pair."""
    greater = (positive_scores[:, None] > negative_scores[None, :]).sum()
    ties = (positive_scores[:, None] == negative_scores[None, :]).sum()
    return float(greater + 0.5 * ties) / (len(positive_scores) * len(negative_scores))


def test_pairwise_auroc_on_known_rankings():
    assert pairwise_auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert pairwise_auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert pairwise_auroc(np.array([1.0, 3.0]), np.array([2.0, 2.0])) == 0.5
    assert pairwise_auroc(np.array([2.0]), np.array([2.0, 1.0])) == 0.75


@pytest.fixture(scope="module")
def weighting_run(tmp_path_factory, run_script):
    data = tmp_path_factory.mktemp("data")
    finished = run_script("implicit-augment.py", "--dataset", "DIGITS", "--epochs", EPOCHS, "-nr", NOISE_RATIO,
                          "--los-model", "WGHT", "--hyper-opt", "HES", "--data", data, "-r", "run0",
                          "--no-cuda", timeout=300)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    folder = run_files.run_dir(data, "DIGITS", "run0")
    name = run_files.run_name("resnet18", "HES", "NONE", "WGHT", 1, 1.0, NOISE_RATIO)
    return folder, name


def test_hes_weights_rank_noisy_labels_below_clean_ones(weighting_run):
    folder, name = weighting_run
    results = json.loads(run_files.results_path(folder, name).read_text())
    assert results["status"] == "finished" and results["epochs_done"] == EPOCHS
    assert results["learned"]["skipped_hyper_steps"] == 0
    assert len(results["hyper_diagnostics"]) == EPOCHS - 1 - results["config"]["hyper_start"]

    # our own computation from the files: split (noisy labels) and last checkpoint (weights)
    valid, train, noisy_targets = torch.load(folder / run_files.split_file_name(1, 1.0, NOISE_RATIO),
                                             weights_only=True)
    official = load_digits().train_targets
    assert len(noisy_targets) == len(official) == 1437
    is_noisy = (noisy_targets[train] != official[train]).numpy()
    assert is_noisy.sum() == results["split"]["noisy_labels"]
    # half the labels re-drawn uniformly, a tenth of those landing on the true class
    assert 0.40 * len(train) < is_noisy.sum() < 0.50 * len(train)

    checkpoint = torch.load(run_files.last_checkpoint_path(folder, name), weights_only=True)
    weight_logits = checkpoint["reweight_state_dict"]["weight_logits"]
    assert weight_logits.shape == (1437,)
    # float32, as the model computes them: softplus rounds a couple of close logits to ties
    weights = (torch.nn.functional.softplus(weight_logits) / math.log(2.0))[train].numpy()
    # only train rows are ever touched; valid rows keep their initial weight 1
    untouched = torch.ones(1437, dtype=torch.bool)
    untouched[train] = False
    assert torch.equal(weight_logits[untouched], torch.zeros(int(untouched.sum())))

    auroc = pairwise_auroc(weights[~is_noisy], weights[is_noisy])
    assert results["learned"]["noisy_weight_auroc"] == pytest.approx(auroc, abs=1e-12)
    logits = weight_logits[train].numpy()  # the weight is monotone in its logit: same ranking
    assert pairwise_auroc(logits[~is_noisy], logits[is_noisy]) == pytest.approx(auroc, abs=1e-4)
    assert auroc >= AUROC_THRESHOLD, auroc
    assert weights[is_noisy].mean() < weights[~is_noisy].mean()

    best = torch.load(run_files.best_checkpoint_path(folder, name), weights_only=True)
    assert best["epoch"] == results["best"]["epoch"]
    assert best["acc"] == pytest.approx(results["best"]["acc"])
