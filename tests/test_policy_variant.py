"""The fixed policies (RAND, AUTO, DADA, the colour sub-policy of SHA/SEP) are applied as the
released code applies them by default (docs/design.md §6: first on the raw image, PIL's nearest
sampling and black fill); `--policy-variant ITEM` switches each item to this project's earlier
choice: `after-crop` (the policy after random crop and flip), `bilinear-grey` (bilinear
sampling and a grey 0.5 fill). Pinned here: the option, its record in the config, the resume
identity and the run name, get-results' selection and table rows, run-table's pass-through.
The operations themselves are pinned in test_policies.py, the order in test_base_transforms.py."""
import json
from pathlib import Path

import pytest

import custom_cli.results
import custom_cli.train
from custom_runs import identity, run_files
from custom_runs.builders import build_parts
from custom_runs.table import sweep
from custom_runs.identity import IDENTITY_OPTIONS
from custom_runs.options import POLICY_VARIANT_ITEMS, policy_variant_items, saved_option
from custom_runs.run_state import run_config
from custom_runs.set_up import plan_run, prepare_data

DESIGN_NAME = "resnet18_opt_NONE_est_True_aug_model_RAND_los_model_NONE_ir_1_sr_1.0_nr_0.0"


def planned(tmp_path, *options):
    """The run's plan and its train transform, as the run builds them."""
    args = custom_cli.train.get_args(["--data", str(tmp_path), "--dataset", "DIGITS", "--no-cuda", *options])
    plan = plan_run(args)
    return plan, build_parts(plan, prepare_data(plan)).batches.train_transform


def test_items_keep_a_fixed_order_all_expands_and_none_is_kept_without_a_policy():
    assert policy_variant_items([]) == []
    assert policy_variant_items(["bilinear-grey", "after-crop", "bilinear-grey"]) == \
        ["after-crop", "bilinear-grey"]
    assert policy_variant_items(["all"]) == list(POLICY_VARIANT_ITEMS) == ["after-crop", "bilinear-grey"]
    assert policy_variant_items(["all"], "NONE") == []  # no fixed policy to change
    assert policy_variant_items(["after-crop"], "SHA") == ["after-crop"]  # its colour sub-policy
    assert "policy_variant" in IDENTITY_OPTIONS  # a resume must agree on it


def test_run_name_has_a_policy_suffix_only_when_an_item_is_chosen():
    assert run_files.run_name("resnet18", "NONE", "RAND", "NONE", 1, 1.0, 0.0) == DESIGN_NAME
    assert run_files.run_name("resnet18", "NONE", "RAND", "NONE", 1, 1.0, 0.0,
                              policy_variant=["after-crop"]) == DESIGN_NAME + "_policy_after-crop"
    assert run_files.run_name("resnet18", "NONE", "RAND", "NONE", 1, 1.0, 0.0, paper_text=["valid"],
                              policy_variant=POLICY_VARIANT_ITEMS) == \
        DESIGN_NAME + "_text_valid_policy_after-crop-bilinear-grey"


def test_an_unknown_item_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        custom_cli.train.get_args(["--policy-variant", "grey"])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "'grey'" in error and "after-crop" in error


@pytest.mark.parametrize("options, items, after_crop, bilinear_grey", [
    ([], [], False, False),
    (["--policy-variant", "after-crop"], ["after-crop"], True, False),
    (["--policy-variant", "all"], ["after-crop", "bilinear-grey"], True, True),
])
def test_the_option_reaches_the_train_transform_the_config_and_the_name(tmp_path, options, items,
                                                                       after_crop, bilinear_grey):
    plan, train_transform = planned(tmp_path, "--aug-model", "RAND", *options)
    assert plan.args.policy_variant == items and run_config(plan)["policy_variant"] == items
    assert train_transform.policy_after_crop is after_crop
    assert train_transform.policy.bilinear_grey is bilinear_grey
    assert plan.name == DESIGN_NAME + (f"_policy_{'-'.join(items)}" if items else "")


def test_without_a_policy_the_option_changes_neither_name_nor_record(tmp_path):
    plan, train_transform = planned(tmp_path, "--policy-variant", "all")
    assert plan.args.policy_variant == [] and train_transform.policy is None
    assert plan.name == DESIGN_NAME.replace("RAND", "NONE")


def test_files_from_before_the_option_resume_as_the_default_only_without_a_policy():
    old_baseline = {"aug_model": "NONE", "paper_text": []}
    old_rand = {"aug_model": "RAND", "paper_text": []}
    assert saved_option(old_baseline, "policy_variant") == []
    assert saved_option(old_rand, "policy_variant") is None  # ran the policy the earlier way
    assert saved_option({"aug_model": "RAND", "policy_variant": ["after-crop"]}, "policy_variant") == \
        ["after-crop"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """RAA on DIGITS, 1 epoch: released and `--policy-variant all`, in one run folder."""
    data = tmp_path_factory.mktemp("data")
    base = ["--data", str(data), "--dataset", "DIGITS", "--epochs", "1", "--aug-model", "RAND",
            "--no-cuda"]
    for extra in ([], ["--policy-variant", "all"]):
        assert custom_cli.train.main(custom_cli.train.get_args(base + extra)) == 0
    folder = data / "DIGITS" / "run0"
    return data, {key: run_files.load_results(run_files.results_path(folder, DESIGN_NAME + suffix))
                  for key, suffix in (("released", ""), ("ours", "_policy_after-crop-bilinear-grey"))}


def test_runs_record_their_items_and_get_results_selects_and_labels_them(two_runs, capsys):
    data, results = two_runs
    assert results["released"]["config"]["policy_variant"] == []
    assert results["ours"]["config"]["policy_variant"] == ["after-crop", "bilinear-grey"]
    common = ["--data", str(data), "--dataset", "DIGITS", "--aug-model", "RAND", "--format", "json"]
    for extra, key in (([], "released"), (["--policy-variant", "all"], "ours")):
        assert custom_cli.results.main(custom_cli.results.get_args(common + extra)) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["run_name"] == results[key]["run_name"]
        assert report["runs"][0]["acc"] == pytest.approx(results[key]["best"]["acc"])
    assert custom_cli.results.main(custom_cli.results.get_args(
        ["--data", str(data), "--dataset", "DIGITS", "--table", "--format", "json"])) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [row["name"] for row in rows] == ["RAA", "RAA (policy: all)"]
    assert [row["policy_variant"] for row in rows] == [[], ["after-crop", "bilinear-grey"]]
    assert rows[1]["cells"]["1-0.0"]["values"] == [pytest.approx(100 - results["ours"]["best"]["acc"])]
    assert identity.Configuration.from_results(
        results["ours"], Path(data, "DIGITS", "run0", f"results_{results['ours']['run_name']}.json")
    ).policy_variant == ("after-crop", "bilinear-grey")


def test_run_table_passes_the_option_on_and_its_cells_are_their_own(tmp_path):
    labels = ["Baseline", "RAA", "A"]
    default = sweep.expand("DIGITS", str(tmp_path), labels, ["10-0.1"], 1, ["--epochs", "1"])
    ours = sweep.expand("DIGITS", str(tmp_path), labels, ["10-0.1"], 1,
                        ["--epochs", "1", "--policy-variant", "all"])
    by_label = lambda specs: {spec.label: spec for spec in specs}  # noqa: E731
    default, ours = by_label(default), by_label(ours)
    # without a fixed policy the cell is shared: the same run, not a second one
    assert ours["Baseline"].config == default["Baseline"].config
    for label in ("RAA", "A"):
        assert ours[label].config.policy_variant == ("after-crop", "bilinear-grey")
        assert ours[label].config.name == default[label].config.name + "_policy_after-crop-bilinear-grey"
        assert dict(ours[label].identity)["policy_variant"] == ["after-crop", "bilinear-grey"]
        assert dict(default[label].identity)["policy_variant"] == []
