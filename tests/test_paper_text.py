"""The released code's data path is the default; `--paper-text ITEM` switches each item to
what the paper's text describes (docs/methods.md, "Where the paper's text and its code differ").
Pinned here: the identity resample of every configuration (`baselines`), the valid batch of
the hyper step (`valid`), the loaders' short last batch (`last-batch`), the hyper learning
rate's warm-up (`warmup`), the option itself, the run names and get-results' selection.
The warp path (`geometry`, `downsample`) is pinned in test_augment_model.py, the block
(`wrn-block`) in test_networks.py."""
import json
import math
from types import SimpleNamespace

import pytest
import torch

import custom_cli.results
import custom_cli.train
from custom_common.settings import get_settings
from custom_datasets.containers import InMemoryData
from custom_models.schedule import hyper_learning_rate
from custom_models.training import train_one_epoch
from custom_runs import identity, run_files
from custom_runs.builders import build_parts
from custom_runs.identity import IDENTITY_OPTIONS
from custom_runs.options import PAPER_TEXT_ITEMS, paper_text_items
from custom_runs.set_up import plan_run, prepare_data
from custom_transforms import affine
from custom_transforms.base import EvalTransform


def experiment(tmp_path, *options, data=None, dataset="DIGITS"):
    """A run's plan, prepared data and parts, flattened into one namespace."""
    args = custom_cli.train.get_args(["--data", str(tmp_path), "--dataset", dataset, "--no-cuda", *options])
    plan = plan_run(args)
    prepared = prepare_data(plan, data)
    parts = build_parts(plan, prepared)
    return SimpleNamespace(settings=plan.settings, data=prepared.data, split=prepared.split,
                           train_batches=parts.batches.train, hyper_batches=parts.batches.hyper,
                           valid_batches=parts.batches.valid, network=parts.models.network,
                           hyper=parts.models.hyper, optimizer=parts.models.optimizer)


# ----------------------------------------------------------------------------- the option

def test_paper_text_items_keep_a_fixed_order_and_all_expands_to_every_item():
    assert paper_text_items([]) == []
    assert paper_text_items(["valid", "geometry", "valid"]) == ["geometry", "valid"]
    assert paper_text_items(["all"]) == list(PAPER_TEXT_ITEMS) == [
        "geometry", "downsample", "baselines", "valid", "warmup", "last-batch", "wrn-block"]
    assert "paper_text" in IDENTITY_OPTIONS  # a resume must agree on it


def test_run_name_has_a_text_suffix_only_when_an_item_is_chosen():
    design = "resnet18_opt_HES_est_True_aug_model_SEP_los_model_BOTH_ir_10_sr_1.0_nr_0.1"
    assert run_files.run_name("resnet18", "HES", "SEP", "BOTH", 10, 1.0, 0.1) == design
    assert run_files.run_name("resnet18", "HES", "SEP", "BOTH", 10, 1.0, 0.1,
                              paper_text=["geometry", "valid"]) == design + "_text_geometry-valid"
    args = custom_cli.train.get_args(["--paper-text", "wrn-block", "geometry"])
    assert args.paper_text == ["geometry", "wrn-block"]
    assert custom_cli.train.get_args([]).paper_text == []


def test_an_unknown_item_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        custom_cli.train.get_args(["--paper-text", "colour"])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "'colour'" in error and "geometry" in error


# ----------------------------------------------------------------------------- baselines

@pytest.mark.parametrize("options, resampled", [
    (("--aug-model", "NONE"), affine.RELEASED), (("--aug-model", "RAND"), affine.RELEASED),
    (("--aug-model", "NONE", "--paper-text", "geometry"),
     affine.Resampling(matrix_at_warp_size=True, consistent_grid=True)),
    (("--aug-model", "NONE", "--paper-text", "baselines"), None)])
def test_baseline_train_images_go_through_the_identity_resample_unless_the_text_is_asked(
        tmp_path, options, resampled):
    """By default on the released code's shrunk grid; `geometry` resamples on the consistent
    grid, `baselines` not at all."""
    exp = experiment(tmp_path, "-ir", "10", *options)
    torch.manual_seed(0)
    batch = next(iter(exp.train_batches))
    seen = []
    features = exp.network.features
    exp.network.features = lambda images: seen.append(images.clone()) or features(images)
    train_one_epoch(exp.network, exp.hyper, [batch], exp.optimizer, lambda _: 0.01)
    expected = affine.resample(batch[0], resampling=resampled) if resampled else batch[0]
    assert torch.equal(seen[0], expected)
    if resampled:  # and the resample does change the images
        assert (seen[0] - batch[0]).abs().max() > 0.1


def test_loss_only_hyper_step_resamples_its_valid_batch_unless_the_text_is_asked(tmp_path):
    released = experiment(tmp_path, "--los-model", "WGHT", "--hyper-opt", "HES")
    text = experiment(tmp_path, "--los-model", "WGHT", "--hyper-opt", "HES", "--force",
                      "--paper-text", "baselines")
    assert released.hyper.augment_model is None and released.hyper.resamples
    assert not text.hyper.resamples


# ----------------------------------------------------------------------------- the valid batch

def inverted_fraction(valid_images, plain_images):
    """Images whose pixels run against their plain version (an odd number of Invert ops)."""
    a = valid_images.flatten(1) - valid_images.flatten(1).mean(1, keepdim=True)
    b = plain_images.flatten(1) - plain_images.flatten(1).mean(1, keepdim=True)
    correlation = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-8)
    return float((correlation < -0.5).float().mean())


def valid_and_plain(exp, passes=4):
    torch.manual_seed(0)
    plain = EvalTransform(exp.settings)
    pairs = [(images, plain(exp.data.train_images[index.cpu()].to(images.device)))
             for _ in range(passes) for images, _, index in exp.valid_batches]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


def test_valid_images_carry_the_colour_sub_policy_of_sep_unless_the_text_is_asked(tmp_path):
    """MNIST family (DIGITS), SEP: 3 colour operations drawn from 6 with Invert among them;
    an odd number of inversions happens with probability (1 - (2/3)^3) / 2 = 19/54 = 0.35."""
    released = experiment(tmp_path, "--aug-model", "SEP", "--hyper-opt", "HES")
    valid, plain = valid_and_plain(released)
    assert 0.25 < inverted_fraction(valid, plain) < 0.45
    for images, labels, index in released.valid_batches:  # labels stay the official ones
        assert torch.equal(labels, released.data.train_targets[index])
    text = experiment(tmp_path, "--aug-model", "SEP", "--hyper-opt", "HES", "--force",
                      "--paper-text", "valid")
    valid, plain = valid_and_plain(text)
    assert torch.equal(valid, plain)


def synthetic_svhn(count=1200, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = lambda n: torch.randint(64, 192, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)  # noqa: E731
    labels = lambda n: torch.arange(n) % 10  # noqa: E731
    return InMemoryData(images(count), labels(count), images(100), labels(100))


def test_valid_images_carry_svhns_crop_and_erasing_unless_the_text_is_asked(tmp_path):
    """Random pixels in 64..191 never normalise to exactly 0, which the zero padding of the
    crop (unit value 0) does not either; erasing writes exact zeros into the normalised image."""
    options = ("--los-model", "WGHT", "--hyper-opt", "HES")
    released = experiment(tmp_path, *options, data=synthetic_svhn(), dataset="SVHN")
    valid, plain = valid_and_plain(released, passes=2)
    changed = (valid != plain).flatten(1).any(1).float().mean()
    erased = ((valid == 0).flatten(1).sum(1) >= 3 * 4).float().mean()
    mean, std = torch.tensor(get_settings("SVHN").mean), torch.tensor(get_settings("SVHN").std)
    padding = (-mean / std).view(1, 3, 1, 1)
    padded = (valid == padding).all(1).flatten(1).any(1).float().mean()
    assert changed > 0.95  # an image is left alone only with offset (4, 4) and no erasing
    assert 0.4 < erased < 0.6  # random erasing, p = 0.5
    assert 0.8 < padded  # some padding shows unless the offset is (4, 4)
    text = experiment(tmp_path, *options, "--force", "--paper-text", "valid",
                      data=synthetic_svhn(), dataset="SVHN")
    valid, plain = valid_and_plain(text, passes=1)
    assert torch.equal(valid, plain)


# ----------------------------------------------------------------------------- last batch

def test_valid_and_hyper_loaders_drop_their_short_last_batch_unless_the_text_is_asked(tmp_path):
    released = experiment(tmp_path, "-ir", "10", "--aug-model", "SHA", "--hyper-opt", "HES")
    train, valid = len(released.split.train_indices), len(released.split.valid_indices)
    size = released.settings.hyper_batch_size
    assert (train, valid, size) == (635, 287, 128)
    assert (len(released.hyper_batches), len(released.valid_batches)) == (4, 2)  # 635 // 128, 287 // 128
    assert all(len(batch[2]) == 128 for batch in released.valid_batches)
    text = experiment(tmp_path, "-ir", "10", "--aug-model", "SHA", "--hyper-opt", "HES", "--force",
                      "--paper-text", "last-batch")
    assert (len(text.hyper_batches), len(text.valid_batches)) == (5, 3)
    assert sorted(len(batch[2]) for batch in text.valid_batches) == [31, 128, 128]


# ----------------------------------------------------------------------------- warm-up

def test_hyper_lr_counts_hyper_epochs_from_one_by_default_and_from_zero_in_the_text():
    """Hyper lr 0.05, 20 epochs, hyper steps after epoch 5: 14 hyper epochs (6..19), warm-up
    over 5 of them, 4 steps each. The cosine value at hyper epoch 5 is
    5e-5 + (0.05 - 5e-5) * (1 + cos(5π/13)) / 2 = 0.0338813.
    Released: the first hyper epoch (epoch 6) is hyper epoch 1, already 4/20 into the warm-up:
    0.005 + (0.0338813 - 0.005) * 0.2 = 0.0107763; the warm-up ends after epoch 9.
    Text: it is hyper epoch 0, starting at 0.05 / 10; the warm-up ends after epoch 10."""
    target = 5e-5 + (0.05 - 5e-5) * (1 + math.cos(5 * math.pi / 13)) / 2
    assert target == pytest.approx(0.0338813, abs=1e-7)

    def rate(epoch, step, first):
        return hyper_learning_rate(0.05, epoch, 5, 20, step, 4, 5, first)
    assert rate(6, 0, 1) == pytest.approx(0.0107763, abs=1e-7)
    assert rate(6, 0, 0) == pytest.approx(0.005, abs=1e-12)
    assert rate(6, 3, 0) == pytest.approx(0.005 + 0.0288813 * 3 / 20, abs=1e-7)
    assert rate(10, 0, 1) == pytest.approx(target, abs=1e-7)  # warm-up over
    assert rate(10, 0, 0) == pytest.approx(0.005 + 0.0288813 * 16 / 20, abs=1e-7)
    assert rate(11, 0, 0) == pytest.approx(target, abs=1e-7)
    assert rate(19, 0, 1) == rate(18, 0, 1) == pytest.approx(5e-5)  # the last two at the floor
    assert rate(19, 0, 0) == pytest.approx(5e-5)


# ----------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A_SHA on DIGITS, 3 epochs, one hyper step per hyper epoch from epoch 1: released and
    `--paper-text warmup`, in one run folder."""
    data = tmp_path_factory.mktemp("data")
    base = ["--data", str(data), "--dataset", "DIGITS", "--epochs", "3", "--hyper-start", "0",
            "--hyper-steps", "1", "--aug-model", "SHA", "--hyper-opt", "HES", "--no-cuda"]
    for extra in ([], ["--paper-text", "warmup"]):
        assert custom_cli.train.main(custom_cli.train.get_args(base + extra)) == 0
    folder = data / "DIGITS" / "run0"
    name = run_files.run_name("resnet18", "HES", "SHA", "NONE", 1, 1.0, 0.0)
    return data, {key: run_files.load_results(run_files.results_path(folder, name + suffix))
                  for key, suffix in (("released", ""), ("text", "_text_warmup"))}


def test_runs_record_the_items_and_the_hyper_lr_of_their_warm_up(two_runs):
    """2 hyper epochs, so a warm-up of min(5, 2 - 1) = 1 epoch. Released: the first hyper
    epoch is hyper epoch 1, past the warm-up, at the cosine's end 0.05 * 1e-3. Text: hyper
    epoch 0, step 0 of 1, at 0.05 / 10."""
    _, results = two_runs
    assert results["released"]["config"]["paper_text"] == []
    assert results["text"]["config"]["paper_text"] == ["warmup"]
    assert results["text"]["run_name"].endswith("_nr_0.0_text_warmup")
    assert results["released"]["history"][1]["hyper_lr"] == pytest.approx(5e-5)
    assert results["text"]["history"][1]["hyper_lr"] == pytest.approx(0.005)


def test_get_results_selects_and_labels_runs_by_their_paper_text_items(two_runs, capsys):
    data, results = two_runs
    common = ["--data", str(data), "--dataset", "DIGITS", "--aug-model", "SHA", "--hyper-opt", "HES",
              "--format", "json"]
    for extra, key in (([], "released"), (["--paper-text", "warmup"], "text")):
        assert custom_cli.results.main(custom_cli.results.get_args(common + extra)) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["run_name"] == results[key]["run_name"]
        assert report["runs"][0]["acc"] == pytest.approx(results[key]["best"]["acc"])
    assert custom_cli.results.main(custom_cli.results.get_args(
        ["--data", str(data), "--dataset", "DIGITS", "--table", "--format", "csv"])) == 0
    rows = [line.split(",") for line in capsys.readouterr().out.splitlines()]
    assert [row[0] for row in rows[1:]] == ["A_SHA", "A_SHA (text: warmup)"]
    assert [row[6] for row in rows[1:]] == ["", "warmup"]
    error = 100 - results["text"]["best"]["acc"]
    assert float(rows[2][8]) == pytest.approx(error, abs=1e-4)  # after the policy_variant column


def test_table_rows_of_every_text_item_are_labelled_text_all():
    from custom_reports.tables import _row_name
    method = ("SEP", "BOTH", "HES")
    assert _row_name(method, "resnet18", "", "resnet18", PAPER_TEXT_ITEMS) == "A_W_S (text: all)"
    assert _row_name(method, "resnet18", "", "resnet18", ("geometry", "valid")) == \
        "A_W_S (text: geometry, valid)"
    assert _row_name(method, "resnet18", "", "resnet18") == "A_W_S"


def test_figures_of_text_runs_load_their_own_block_and_never_overwrite_the_released_ones(tmp_path):
    from custom_models.networks import build_network
    from custom_reports import figures
    from custom_runs.checkpoints import load_network
    settings = get_settings("CIFAR10")
    torch.manual_seed(0)
    encoder, decoder = build_network("wresnet10_1", settings, text_wide_block=True)
    checkpoint = {"encoder_state_dict": encoder.state_dict(), "decoder_state_dict": decoder.state_dict()}
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = encoder.eval()(images)
        loaded = [load_network(checkpoint, "wresnet10_1", settings, torch.device("cpu"),
                               tmp_path / "best.pt", text)[0](images) for text in (True, False)]
    assert torch.equal(loaded[0], expected)
    assert (loaded[1] - expected).abs().max() > 1e-3  # same weights, the released strides
    paths = []
    for paper_text in ((), ("wrn-block",)):
        config = identity.Configuration("wresnet10_1", "SEP", "BOTH", "HES", 10, 1.0, 0.1,
                                        paper_text=paper_text)
        run = figures.RunFigures(tmp_path, settings, "run0", {"A_W_S": config}, out_dir=tmp_path)
        paths.append(run.base_path("tsne", ["A_W_S"]).name)
    # the figures' default network is the validation-selected one (bestvalid_): "-valid"
    assert paths == ["tsne_CIFAR10_wresnet10_1_run0_ir_10_sr_1.0_nr_0.1_A_W_S-valid",
                     "tsne_CIFAR10_wresnet10_1_run0_ir_10_sr_1.0_nr_0.1_A_W_S-valid-text_wrn-block"]
