"""visualize-density.py on a DIGITS run folder written here: real build_network state dicts,
the real split builder, planted loss weights / soft labels / augmentation tables."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import custom_cli.visualize
from custom_common.settings import get_settings
from custom_datasets.sources import load_data
from custom_datasets.split import build_split
from custom_reports import drawing, embeddings, figures, learned
from custom_runs import identity, run_files
from custom_models.networks import build_network

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "visualize-density.py"
IR, NR = 10, 0.3
SETTINGS = get_settings("DIGITS")


def planted_checkpoint(seed, split, official, aug_model):
    """A checkpoint whose loss weights favour clean labels, whose soft labels lean to the
    official class, and whose augmentation is stronger for the rare (upper) classes."""
    torch.manual_seed(seed)
    encoder, decoder = build_network("resnet18", SETTINGS)
    _, train, stored = split
    total, classes = len(official), SETTINGS.num_classes
    noisy = torch.zeros(total, dtype=torch.bool)
    noisy[train] = stored[train] != official[train]
    weight_logits = torch.where(noisy, -2.0, 2.0) + 0.3 * torch.randn(total)
    soft_logits = 3.0 * torch.nn.functional.one_hot(stored, classes).float()
    soft_logits[noisy, official[noisy]] += 9.0  # the official label wins for noisy samples
    upper = official >= classes // 2
    augment = {}
    if aug_model == "SEP":
        probability = torch.where(upper, 1.0, -1.0)[:, None].repeat(1, 7)
        augment = {"probability_logits": probability, "magnitude_logits": torch.zeros(total, 7)}
    return {"encoder_state_dict": encoder.state_dict(), "decoder_state_dict": decoder.state_dict(),
            "reweight_state_dict": {"weight_logits": weight_logits, "soft_logits": soft_logits},
            "augment_state_dict": augment, "acc": 10.0, "epoch": 0}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    official = load_data(SETTINGS, root).train_targets
    split = build_split(official, SETTINGS.num_classes, SETTINGS.valid_size, IR, 1.0, NR, seed=0).as_tuple()
    folder = run_files.run_dir(root, "DIGITS", "run0")
    run_files.save_torch(split, folder / run_files.split_file_name(IR, 1.0, NR))
    methods = identity.paper_methods()
    for seed, label in enumerate(("Baseline", "FAA", "A_W", "A_W_S")):
        config = identity.Configuration("resnet18", *methods[label], IR, 1.0, NR)
        checkpoint = planted_checkpoint(seed, split, official, config.aug_model)
        run_files.save_torch(checkpoint, run_files.last_checkpoint_path(folder, config.name))
        # best_ and bestvalid_: the same network, with the tables as they start (before any
        # hyper step)
        for kind in ("best", "valid"):
            run_files.save_torch({**checkpoint, "reweight_state_dict": {
                key: torch.zeros_like(value) for key, value in checkpoint["reweight_state_dict"].items()}},
                run_files.checkpoint_path(folder, config.name, kind))
    return root, split, official


def visualize(root, out, *flags):
    return subprocess.run([sys.executable, str(SCRIPT), "--data", str(root), "--dataset", "DIGITS",
                           "-ir", str(IR), "-nr", str(NR), "--out", str(out), "--no-cuda", *flags],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def assert_figure_files(out, pattern):
    for suffix, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
        found = list(Path(out).glob(f"{pattern}.{suffix}"))
        assert len(found) == 1, f"{pattern}.{suffix} in {sorted(os.listdir(out))}"
        content = found[0].read_bytes()
        assert content.startswith(magic) and len(content) > 5000
    assert not list(Path(out).glob(".*.tmp"))  # atomic writes leave no temporary file


# ----------------------------------------------------------------------------- command line

def test_cli_tsne_figure_is_written_and_redrawn_from_the_cache(digits_run, tmp_path):
    root, _, _ = digits_run
    first = visualize(root, tmp_path, "--max-points", "150")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("computing t-SNE of 150 test features") == 3
    # the default network: bestvalid_'s, named in the file
    assert_figure_files(tmp_path, "tsne_DIGITS_resnet18_run0_ir_10_sr_1.0_nr_0.3_Baseline-FAA-A_W_S-valid")
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3
    second = visualize(root, tmp_path, "--max-points", "150")
    assert second.returncode == 0, second.stderr
    assert "computing" not in second.stdout and second.stdout.count("t-SNE cached") == 3


def test_cli_confusion_matrices_and_learned_densities(digits_run, tmp_path):
    root, _, _ = digits_run
    done = visualize(root, tmp_path, "--plot-cmx", "--densities", "--configs", "Baseline", "A_W", "A_W_S")
    assert done.returncode == 0, done.stderr
    assert_figure_files(tmp_path, "confusion_DIGITS_resnet18_run0_ir_10_sr_1.0_nr_0.3_Baseline-A_W-A_W_S-valid")
    assert_figure_files(tmp_path, "densities_*_A_W")
    assert_figure_files(tmp_path, "densities_*_A_W_S")
    assert "A_W_S: Loss weight: clean vs noisy labels: mean clean label" in done.stdout
    assert "AUROC 1.000" in done.stdout


def test_cli_missing_checkpoints_are_named_in_one_line(digits_run, tmp_path):
    root, _, _ = digits_run
    done = visualize(root, tmp_path, "--configs", "Baseline", "DADA", "A")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "aug_model_DADA" in lines[0] and "aug_model_SEP_los_model_NONE" in lines[0]
    assert "aug_model_NONE_los_model_NONE" not in lines[0]  # Baseline's checkpoint exists
    assert not list(tmp_path.glob("*.png"))


def test_a_run_from_before_validation_selection_says_to_use_the_best_or_last_checkpoint(tmp_path):
    config = identity.Configuration("resnet18", *identity.paper_methods()["A_W"], IR, 1.0, NR)
    folder = run_files.run_dir(tmp_path, "DIGITS", "run0")
    for kind in ("best", "last"):
        run_files.save_torch({"acc": 10.0, "epoch": 0}, run_files.checkpoint_path(folder, config.name, kind))
    run = figures.RunFigures(tmp_path, SETTINGS, "run0", {"A_W": config}, out_dir=tmp_path / "out")
    with pytest.raises(figures.FigureError) as raised:
        run.check_checkpoints()
    assert str(raised.value) == (
        f"missing {run_files.best_valid_checkpoint_path(folder, config.name)}; runs from before "
        f"validation selection have no bestvalid_ checkpoint: use --checkpoint best "
        f"(test-selected, the paper's protocol) or --checkpoint last")
    figures.RunFigures(tmp_path, SETTINGS, "run0", {"A_W": config}, "best").check_checkpoints()


def test_figure_names_say_which_checkpoint_drew_them(tmp_path):
    config = identity.Configuration("resnet18", *identity.paper_methods()["A_W"], IR, 1.0, NR)
    names = {kind: figures.RunFigures(tmp_path, SETTINGS, "run0", {"A_W": config}, kind,
                                      tmp_path).base_path("tsne", ["A_W"]).name
             for kind in ("valid", "best", "last")}
    assert names == {"valid": "tsne_DIGITS_resnet18_run0_ir_10_sr_1.0_nr_0.3_A_W-valid",
                     "best": "tsne_DIGITS_resnet18_run0_ir_10_sr_1.0_nr_0.3_A_W",
                     "last": "tsne_DIGITS_resnet18_run0_ir_10_sr_1.0_nr_0.3_A_W-last"}


def test_cli_out_that_is_a_file_fails_in_one_line_before_any_work(digits_run, tmp_path):
    root, _, _ = digits_run
    out = tmp_path / "figures"
    out.write_text("not a folder")
    done = visualize(root, out, "--max-points", "150")
    assert done.returncode == 1 and "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr == (f"visualize-density.py: error: --out {out}: cannot write files there "
                           f"(a file, not a folder); choose another folder with --out\n")
    assert out.read_text() == "not a folder" and sorted(os.listdir(tmp_path)) == ["figures"]


def test_cli_bad_option_fails_in_one_line_and_writes_nothing(digits_run, tmp_path):
    root, _, _ = digits_run
    done = visualize(root, tmp_path / "figures", "--perplexity", "0")
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("visualize-density.py: error: --perplexity must be > 0, got 0.0")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def visualize_args():
    """visualize-density.py's get_args, without a new interpreter."""
    return custom_cli.visualize.get_args


@pytest.mark.parametrize("flags, message", [
    (["--perplexity", "-5"], "--perplexity must be > 0, got -5.0"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--batch-size", "-1"], "--batch-size must be at least 1, got -1"),
    (["--threads", "-3"], "--threads must be >= 0 (0: automatic), got -3"),
    (["--max-points", "-1"], "--max-points must be >= 0 (0: all), got -1"),
    (["--workers", "-1"], "--workers must be >= 0, got -1"),
    (["-nr", "1.0"], "-nr must be in [0, 1), got 1.0"),
])
def test_out_of_range_options_are_one_line_usage_errors(visualize_args, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_code:
        visualize_args(["--dataset", "DIGITS", *flags])
    assert exit_code.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert f": error: {message} (see " in line


def test_the_papers_gpu_flag_is_accepted_and_chooses_the_feature_device(visualize_args, monkeypatch):
    feature_device = custom_cli.visualize.feature_device
    args = visualize_args(["--dataset", "DIGITS", "--gpu", "1"])
    assert args.gpu == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert feature_device(args) == torch.device("cuda", 1)
    args.no_cuda = True
    assert feature_device(args) == torch.device("cpu")
    args.no_cuda, args.gpu = False, 2
    with pytest.raises(figures.FigureError, match="--gpu 2: only 2 CUDA device"):
        feature_device(args)


def test_out_folder_that_cannot_be_written_is_a_figure_error(tmp_path, monkeypatch):
    config = identity.Configuration("resnet18", *identity.paper_methods()["A_W_S"], IR, 1.0, NR)
    (tmp_path / "a_file").write_text("")
    under_file = figures.RunFigures(tmp_path, SETTINGS, "run0", {"A_W_S": config},
                                    out_dir=tmp_path / "a_file" / "figures")
    with pytest.raises(figures.FigureError, match=r"figures: cannot write files there \(Not a directory\)"):
        under_file.check_out_dir()

    def refuse(*args, **kwargs):  # what a read-only folder does for a user who is not root
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(figures.tempfile, "TemporaryFile", refuse)
    read_only = figures.RunFigures(tmp_path, SETTINGS, "run0", {"A_W_S": config}, out_dir=tmp_path / "out")
    with pytest.raises(figures.FigureError, match=r"out: cannot write files there \(Permission denied\)"):
        read_only.check_out_dir(with_cache=False)


def test_cli_densities_without_a_learning_configuration_is_an_error(digits_run, tmp_path):
    root, _, _ = digits_run
    done = visualize(root, tmp_path, "--densities", "--configs", "Baseline", "FAA")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "add A_W or A_W_S" in done.stderr.strip()


# ----------------------------------------------------------------------------- learned densities

@pytest.mark.parametrize("checkpoint", ["best", "last"])
def test_densities_draw_the_tables_of_the_last_checkpoint_as_the_suspects_report_does(
        digits_run, tmp_path, checkpoint):
    root, split, official = digits_run
    config = identity.Configuration("resnet18", *identity.paper_methods()["A_W"], IR, 1.0, NR)
    run = figures.RunFigures(root, SETTINGS, "run0", {"A_W": config}, checkpoint, tmp_path,
                             log=lambda line: None)
    written, numbers = run.density_figures()
    last = run_files.load_torch(run_files.last_checkpoint_path(run.folder, config.name))
    expected = learned.weights_by_label_noise(last["reweight_state_dict"], split, official.numpy())
    weights = numbers["A_W"][0]
    assert weights.means() == pytest.approx(expected.means(), rel=1e-6)
    assert weights.means()["clean label"] > 2.5 > 0.5 > weights.means()["noisy label"]  # not best_'s 1.0
    # one file whatever --checkpoint says: the tables are the same
    assert sorted(path.name for path in written) == [
        f"densities_DIGITS_resnet18_run0_ir_{IR}_sr_1.0_nr_{NR}_A_W.{suffix}" for suffix in ("pdf", "png")]


def test_densities_need_only_the_last_checkpoint(digits_run, tmp_path):
    root, _, _ = digits_run
    config = identity.Configuration("resnet18", *identity.paper_methods()["A_W"], IR, 1.0, NR)
    run = figures.RunFigures(tmp_path / "empty", SETTINGS, "run0", {"A_W": config})
    with pytest.raises(figures.FigureError, match=r"missing checkpoint: .*/last_resnet18_opt_HES"):
        run.check_checkpoints(networks=False, tables=True)

def test_loss_weights_separate_planted_clean_and_noisy_labels(digits_run):
    _, split, official = digits_run
    checkpoint = planted_checkpoint(3, split, official, "SEP")
    quantity = learned.weights_by_label_noise(checkpoint["reweight_state_dict"], split, official.numpy())
    _, train, stored = split
    noisy = (stored[train] != official[train]).numpy()
    expected = (torch.nn.functional.softplus(checkpoint["reweight_state_dict"]["weight_logits"])
                / math.log(2)).numpy()[train.numpy()]
    assert len(quantity.groups["noisy label"]) == noisy.sum() > 50
    means = quantity.means()
    assert means["clean label"] == pytest.approx(expected[~noisy].mean(), rel=1e-6)
    assert means["noisy label"] == pytest.approx(expected[noisy].mean(), rel=1e-6)
    assert means["clean label"] > 2.5 > 0.5 > means["noisy label"]
    assert quantity.auroc == pytest.approx(1.0)


def test_noisy_mask_ignores_flips_to_the_same_class():
    official = np.array([0, 1, 2, 3, 4])
    stored = torch.tensor([0, 1, 5, 3, 4])  # index 1 "flipped" to its own class, index 2 really
    split = (torch.tensor([0]), torch.tensor([1, 2, 3]), stored)
    assert learned.noisy_train_mask(split, official).tolist() == [False, True, False]


def test_soft_label_confidence_of_noisy_samples(digits_run):
    _, split, official = digits_run
    checkpoint = planted_checkpoint(3, split, official, "SEP")
    quantity = learned.soft_label_confidence(checkpoint["reweight_state_dict"], split, official.numpy())
    # planted logits: 9 at the official class, 3 at the given one, 0 elsewhere (C = 10)
    partition = math.exp(9) + math.exp(3) + 8
    assert quantity.means()["official (true) label"] == pytest.approx(math.exp(9) / partition)
    assert quantity.means()["given (noisy) label"] == pytest.approx(math.exp(3) / partition)
    assert quantity.extra["correction_rate"] == 1.0


def test_augmentation_is_grouped_by_rare_and_frequent_classes(digits_run):
    _, split, official = digits_run
    checkpoint = planted_checkpoint(3, split, official, "SEP")
    probability, magnitude = learned.augmentation_by_class_group(
        checkpoint["augment_state_dict"], split, official.numpy(), SETTINGS.upper_classes)
    _, train, _ = split
    rare = int((official[train] >= 5).sum())
    assert len(probability.groups["upper (rare) classes"]) == rare
    assert probability.means()["upper (rare) classes"] == pytest.approx(1 / (1 + math.exp(-1)))
    assert probability.means()["lower classes"] == pytest.approx(1 / (1 + math.exp(1)))
    assert magnitude.means() == {"upper (rare) classes": 0.5, "lower classes": 0.5}
    assert probability.auroc == 1.0 and magnitude.auroc == 0.5


# ----------------------------------------------------------------------------- cache and helpers

def test_embedding_cache_skips_features_and_tsne_until_the_checkpoint_changes(tmp_path, monkeypatch):
    checkpoint = tmp_path / "best_x.pt"
    run_files.save_torch({"acc": 1.0}, checkpoint)
    cache = tmp_path / "cache" / "x.pt"
    rng = np.random.default_rng(0)
    calls = {"compute": 0, "tsne": 0}

    def compute():
        calls["compute"] += 1
        return rng.normal(size=(40, 8)), np.arange(40) % 4, np.zeros(40, dtype=np.int64)

    def fake_tsne(features, perplexity, seed, threads=0):
        calls["tsne"] += 1
        return features[:, :2].astype(np.float32)

    monkeypatch.setattr(embeddings, "tsne_2d", fake_tsne)
    quiet = dict(with_tsne=True, perplexity=5.0, max_points=30, seed=1, log=lambda _: None)
    first = embeddings.checkpoint_embedding(checkpoint, cache, compute, **quiet)
    second = embeddings.checkpoint_embedding(checkpoint, cache, compute, **quiet)
    assert calls == {"compute": 1, "tsne": 1}
    assert not first.from_cache and second.from_cache
    assert np.array_equal(first.points, second.points) and len(second.indices) == 30
    assert second.error == pytest.approx(75.0)  # predictions 0, labels 0..3
    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))  # a newer checkpoint
    embeddings.checkpoint_embedding(checkpoint, cache, compute, **quiet)
    assert calls == {"compute": 2, "tsne": 2}


def test_confusion_matrix_rows_are_fractions_of_the_true_class():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 0, 1, 1, 1, 0])
    matrix = drawing.confusion_matrix(labels, predictions, 4)
    assert matrix.tolist() == [[0.75, 0.25, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    empty = drawing.confusion_matrix(np.array([], dtype=int), np.array([], dtype=int), 3)
    assert empty.tolist() == [[0, 0, 0]] * 3  # no test images: zeros, as before sklearn


def test_save_figure_writes_png_and_pdf_through_temporary_names(tmp_path):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    paths = drawing.save_figure(fig, tmp_path / "plot_ir_1_sr_1.0")
    assert [p.name for p in paths] == ["plot_ir_1_sr_1.0.png", "plot_ir_1_sr_1.0.pdf"]
    assert paths[0].read_bytes().startswith(b"\x89PNG") and paths[1].read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
