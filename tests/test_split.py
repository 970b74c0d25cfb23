"""The distorted-data protocol of docs/design.md §2 on the real FashionMNIST labels
(60000 train images, 6000 per class, valid size 10000 from the settings table):
valid split, subsample, imbalance, label noise, the split file and its
creation once per run folder."""
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from custom_common.settings import get_settings
from custom_datasets.sources import DEBIAN_FASHION_MNIST, load_data
from custom_datasets import split as split_module
from custom_datasets.split import build_split, check_split_feasible, load_or_create_split
from custom_runs import run_files

REPO = Path(__file__).resolve().parents[1]

FASHION_MNIST_INSTALLED = all((DEBIAN_FASHION_MNIST / f"{stem}.gz").is_file()
                              for stem in ("train-labels-idx1-ubyte", "train-images-idx3-ubyte"))

SETTINGS = get_settings("FashionMNIST")
C = SETTINGS.num_classes
V = SETTINGS.valid_size  # 10000
T = SETTINGS.train_size  # 60000


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """Official FashionMNIST train labels, read from the Debian folder (no files under --data)."""
    if not FASHION_MNIST_INSTALLED:
        pytest.skip(f"real FashionMNIST not installed in {DEBIAN_FASHION_MNIST} "
                    f"(apt-get install dataset-fashion-mnist)")
    data = load_data(get_settings("FashionMNIST"), tmp_path_factory.mktemp("empty_data"), download=False)
    assert len(data.train_targets) == T
    return data.train_targets


_BUILT = {}


def split_of(targets, ir=1, sr=1.0, nr=0.0, seed=0):
    """build_split on the official labels, memoised (the tests only read the tensors)."""
    key = (ir, sr, nr, seed)
    if key not in _BUILT:
        _BUILT[key] = build_split(targets, C, V, ir, sr, nr, seed)
    return _BUILT[key]


def is_upper(labels):
    return labels >= C // 2


# ----------------------------------------------------------------------------- valid split

def test_valid_split_has_exactly_10000_images_1000_per_class(targets):
    split = split_of(targets)
    assert V == 10000
    assert len(split.valid_indices) == 10000
    assert len(torch.unique(split.valid_indices)) == 10000
    assert torch.bincount(targets[split.valid_indices], minlength=C).tolist() == [1000] * C


def test_valid_and_train_are_disjoint_and_cover_the_train_set_without_distortion(targets):
    split = split_of(targets)
    valid, train = set(split.valid_indices.tolist()), set(split.train_indices.tolist())
    assert not valid & train
    assert len(train) == len(split.train_indices) == T - V
    assert valid | train == set(range(T))
    assert split.valid_indices.dtype == split.train_indices.dtype == torch.int64


@pytest.mark.parametrize("ir, sr, nr", [(100, 1.0, 0.1), (10, 0.3, 0.5)])
def test_distortions_never_touch_the_valid_split(targets, ir, sr, nr):
    clean = split_of(targets, seed=4)
    distorted = split_of(targets, ir=ir, sr=sr, nr=nr, seed=4)
    # the valid split is drawn first, so it is the same whatever the distortion
    assert torch.equal(distorted.valid_indices, clean.valid_indices)
    assert not set(distorted.valid_indices.tolist()) & set(distorted.train_indices.tolist())
    assert torch.equal(distorted.train_targets[distorted.valid_indices], targets[distorted.valid_indices])


# ----------------------------------------------------------------------------- subsample

@pytest.mark.parametrize("sr", [0.5, 0.3, 0.01])
def test_subsample_keeps_round_sr_times_pool(targets, sr):
    split = split_of(targets, sr=sr)
    assert len(split.train_indices) == round(sr * (T - V))
    assert len(torch.unique(split.train_indices)) == len(split.train_indices)
    assert not set(split.valid_indices.tolist()) & set(split.train_indices.tolist())


def test_subsample_draws_uniformly_across_classes(targets):
    split = split_of(targets, sr=0.3)  # 15000 of the 50000 pool images, 5000 per class
    counts = torch.bincount(targets[split.train_indices], minlength=C).double()
    # hypergeometric: mean 1500, sd = sqrt(n p (1-p) (N-n)/(N-1)) ~ 33
    sd = math.sqrt(15000 * 0.1 * 0.9 * (50000 - 15000) / (50000 - 1))
    assert (counts - 1500).abs().max() < 4 * sd


# ----------------------------------------------------------------------------- imbalance

def test_imbalance_keeps_int_lower_over_ir_upper_images_and_every_lower_one(targets):
    split = split_of(targets, ir=100, nr=0.1)
    labels = targets[split.train_indices]
    lower, upper = int((~is_upper(labels)).sum()), int(is_upper(labels).sum())
    # every pool image of classes 0..4 is kept: 5 x (6000 - 1000)
    assert lower == 25000
    assert upper == int(25000 / 100) == 250
    pool = torch.ones(T, dtype=torch.bool)
    pool[split.valid_indices] = False
    lower_pool = set(torch.nonzero(pool & ~is_upper(targets)).flatten().tolist())
    assert lower_pool == set(split.train_indices[~is_upper(labels)].tolist())


@pytest.mark.parametrize("ir, sr", [(10, 0.5), (50, 0.3), (3, 1.0)])
def test_imbalance_applies_to_the_subsampled_train_set(targets, ir, sr):
    split = split_of(targets, ir=ir, sr=sr, seed=ir)
    labels = targets[split.train_indices]
    lower, upper = int((~is_upper(labels)).sum()), int(is_upper(labels).sum())
    assert upper == int(lower / ir)
    # the lower images are those of the round(sr*(T-V)) subsample: hypergeometric count
    drawn, pool, lower_pool = round(sr * (T - V)), T - V, 25000
    mean = drawn * lower_pool / pool
    sd = math.sqrt(drawn * 0.5 * 0.5 * (pool - drawn) / (pool - 1)) if drawn < pool else 0.0
    assert abs(lower - mean) <= 4 * sd + 1e-9
    # upper classes are thinned uniformly: no upper class is left out
    upper_counts = torch.bincount(labels[is_upper(labels)], minlength=C)[C // 2:]
    assert int(upper_counts.sum()) == upper
    assert int((upper_counts > 0).sum()) == C - C // 2


# ----------------------------------------------------------------------------- label noise

@pytest.mark.parametrize("nr", [0.1, 0.5])
def test_noise_ratio_changes_about_nr_times_train_times_9_tenths_labels(targets, nr):
    split = split_of(targets, nr=nr, seed=1)
    train = split.train_indices
    changed = int((split.train_targets[train] != targets[train]).sum())
    redrawn = round(nr * len(train))
    # a re-drawn label is uniform over C classes, so it changes with probability (C-1)/C
    expected = redrawn * (C - 1) / C
    sd = math.sqrt(redrawn * (C - 1) / C * (1 / C))
    assert abs(changed - expected) < 4 * sd
    assert changed <= redrawn


def test_noise_leaves_valid_and_non_train_labels_official(targets):
    split = split_of(targets, ir=10, sr=0.5, nr=0.4, seed=2)
    outside = torch.ones(T, dtype=torch.bool)
    outside[split.train_indices] = False
    assert split.train_targets.dtype == torch.int64
    assert len(split.train_targets) == T
    assert torch.equal(split.train_targets[outside], targets[outside])
    assert torch.equal(split.train_targets[split.valid_indices], targets[split.valid_indices])
    assert int((split.train_targets[split.train_indices] != targets[split.train_indices]).sum()) > 0


def test_noise_redraws_exactly_round_nr_times_train_distinct_labels(targets, monkeypatch):
    """The re-drawn labels are replaced by class 10 (which no image has), so every
    re-drawn image is visible; their number must be round(NR * |train|)."""
    real_randint = torch.randint
    calls = []

    def marked_randint(low, high, size, *args, **kwargs):
        calls.append(tuple(size))
        return torch.full(tuple(size), C, dtype=torch.int64)

    monkeypatch.setattr(torch, "randint", marked_randint)
    try:
        split = split_of(targets, ir=10, sr=0.7, nr=0.3, seed=5)
    finally:
        monkeypatch.setattr(torch, "randint", real_randint)
    marked = torch.nonzero(split.train_targets == C).flatten()
    expected = round(0.3 * len(split.train_indices))
    assert calls == [(expected,)]
    assert len(marked) == expected
    assert set(marked.tolist()) <= set(split.train_indices.tolist())


def test_zero_noise_ratio_keeps_every_label(targets):
    split = split_of(targets, ir=10, sr=0.5, nr=0.0)
    assert torch.equal(split.train_targets, targets)


# ----------------------------------------------------------------------------- seeds

def test_same_seed_gives_identical_split(targets):
    first = build_split(targets, C, V, 10, 0.5, 0.2, seed=11)
    second = build_split(targets, C, V, 10, 0.5, 0.2, seed=11)
    for a, b in zip(first.as_tuple(), second.as_tuple()):
        assert torch.equal(a, b)


def test_different_seed_gives_different_valid_train_and_noise(targets):
    first = split_of(targets, ir=10, sr=0.5, nr=0.2, seed=11)
    second = split_of(targets, ir=10, sr=0.5, nr=0.2, seed=12)
    assert not torch.equal(first.valid_indices, second.valid_indices)
    overlap = len(set(first.train_indices.tolist()) & set(second.train_indices.tolist()))
    assert overlap < 0.9 * len(first.train_indices)
    assert not torch.equal(first.train_targets, second.train_targets)


# ----------------------------------------------------------------------------- split file

@pytest.mark.parametrize("ir, sr, nr, name", [
    (100, 1.0, 0.1, "data_ir_100_sr_1.0_nr_0.1.pt"),
    (1, 1, 0, "data_ir_1_sr_1.0_nr_0.0.pt"),
    (10, 0.5, 0.25, "data_ir_10_sr_0.5_nr_0.25.pt"),
])
def test_split_file_name_prints_ratios_as_the_paper(ir, sr, nr, name):
    assert run_files.split_file_name(ir, sr, nr) == name


def test_load_or_create_split_writes_the_named_file_once_as_an_int64_tuple(targets, tmp_path):
    folder = tmp_path / "FashionMNIST" / "run0"
    split = load_or_create_split(folder, targets, C, V, 100, 1.0, 0.1, seed=0)
    assert sorted(p.name for p in folder.iterdir()) == ["data_ir_100_sr_1.0_nr_0.1.pt"]
    stored = torch.load(folder / "data_ir_100_sr_1.0_nr_0.1.pt", weights_only=True)
    assert isinstance(stored, tuple) and len(stored) == 3
    assert all(t.dtype == torch.int64 for t in stored)
    expected = split_of(targets, ir=100, nr=0.1, seed=0)
    for saved, returned, built in zip(stored, split.as_tuple(), expected.as_tuple()):
        assert torch.equal(saved, built)
        assert torch.equal(returned, built)
    assert len(stored[0]) == 10000 and len(stored[1]) == 25250 and len(stored[2]) == T


def test_second_call_loads_the_same_file_even_with_another_seed(targets, tmp_path):
    folder = tmp_path / "run1"
    first = load_or_create_split(folder, targets, C, V, 100, 1.0, 0.1, seed=1)
    path = folder / "data_ir_100_sr_1.0_nr_0.1.pt"
    before = (path.stat().st_mtime_ns, path.read_bytes())
    second = load_or_create_split(folder, targets, C, V, 100, 1.0, 0.1, seed=2)
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before
    for a, b in zip(first.as_tuple(), second.as_tuple()):
        assert torch.equal(a, b)
    assert sorted(p.name for p in folder.iterdir()) == [path.name]


def test_other_ratios_get_their_own_file_in_the_same_folder(targets, tmp_path):
    load_or_create_split(tmp_path, targets, C, V, 100, 1.0, 0.1, seed=0)
    load_or_create_split(tmp_path, targets, C, V, 1, 0.5, 0.0, seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "data_ir_100_sr_1.0_nr_0.1.pt", "data_ir_1_sr_0.5_nr_0.0.pt"]


RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import torch
    from custom_datasets.split import load_or_create_split
    folder, targets_file, seed, me, other, out = sys.argv[2:]
    targets = torch.load(targets_file, weights_only=True)
    Path(me).touch()
    deadline = time.time() + 60
    while not Path(other).exists() and time.time() < deadline:
        time.sleep(0.0005)
    split = load_or_create_split(Path(folder), targets, 10, 10000, 100, 1.0, 0.1, int(seed))
    torch.save(split.as_tuple(), out)
""")


def test_two_processes_starting_together_end_with_one_file_and_one_split(targets, tmp_path):
    folder = tmp_path / "FashionMNIST" / "run0"
    targets_file = tmp_path / "targets.pt"
    torch.save(targets, targets_file)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    racers = []
    for me, other, seed in (("a", "b", 1), ("b", "a", 2)):
        racers.append(subprocess.Popen(
            [sys.executable, "-c", RACER, str(REPO), str(folder), str(targets_file), str(seed),
             str(tmp_path / f"ready_{me}"), str(tmp_path / f"ready_{other}"),
             str(tmp_path / f"split_{me}.pt")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for racer in racers:
        _, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
    # one final file, no temporary leftovers
    assert sorted(p.name for p in folder.iterdir()) == ["data_ir_100_sr_1.0_nr_0.1.pt"]
    a = torch.load(tmp_path / "split_a.pt", weights_only=True)
    b = torch.load(tmp_path / "split_b.pt", weights_only=True)
    stored = torch.load(folder / "data_ir_100_sr_1.0_nr_0.1.pt", weights_only=True)
    for x, y, z in zip(a, b, stored):
        assert torch.equal(x, y) and torch.equal(x, z)
    # the file is the split of one of the two seeds, not a mixture
    candidates = [split_of(targets, ir=100, nr=0.1, seed=seed) for seed in (1, 2)]
    assert any(all(torch.equal(x, y) for x, y in zip(stored, c.as_tuple())) for c in candidates)


def test_a_file_of_another_dataset_is_reported_not_used(targets, tmp_path):
    path = tmp_path / run_files.split_file_name(1, 1.0, 0.0)
    torch.save((torch.arange(5), torch.arange(5, 10), torch.zeros(10, dtype=torch.int64)), path)
    with pytest.raises(run_files.UnreadableFile, match="10 labels, the dataset has 60000"):
        load_or_create_split(tmp_path, targets, C, V, 1, 1.0, 0.0, seed=0)


# ----------------------------------------------------------------------------- feasibility

def test_ir_that_empties_the_upper_classes_is_rejected(targets):
    # 50000 pool images, 25000 of the lower classes: IR 30000 keeps int(25000/30000) = 0
    with pytest.raises(ValueError, match="-ir 30000"):
        check_split_feasible(targets, C, V, 30000, 1.0)
    with pytest.raises(ValueError, match="-ir 300"):
        check_split_feasible(targets, C, V, 300, 0.01)  # 250 lower images / 300


def test_sr_that_keeps_no_image_is_rejected(targets):
    with pytest.raises(ValueError, match="-sr 1e-06"):
        check_split_feasible(targets, C, V, 1, 1e-6)  # round(0.05) = 0
    with pytest.raises(ValueError, match="-sr 1e-05"):
        check_split_feasible(targets, C, V, 1, 1e-5)  # round(0.5) = 0


@pytest.mark.parametrize("ir, sr", [(1, 1.0), (100, 1.0), (100, 0.01), (20000, 1.0), (1, 2e-5)])
def test_feasible_settings_pass_and_build_a_non_empty_upper_group(targets, ir, sr):
    check_split_feasible(targets, C, V, ir, sr)
    split = split_of(targets, ir=ir, sr=sr)
    labels = targets[split.train_indices]
    assert len(labels) >= 1
    if ir > 1:
        assert int(is_upper(labels).sum()) >= 1


def test_a_split_without_upper_class_images_is_refused_before_it_is_written(tmp_path):
    """DIGITS -sr 0.3 -ir 164 passes the early estimate, but run0's draw keeps 162
    lower-class images and so int(162 / 164) = 0 upper ones: build_split must refuse it."""
    from custom_datasets.sources import load_digits
    digits_targets = load_digits().train_targets
    digits = get_settings("DIGITS")
    ir, sr, seed = 164, 0.3, 0
    with pytest.raises(ValueError, match="upper classes"):
        check_split_feasible(digits_targets, 10, digits.valid_size, ir, sr)
        load_or_create_split(tmp_path, digits_targets, 10, digits.valid_size, ir, sr, 0.0, seed)
    assert list(tmp_path.iterdir()) == []
