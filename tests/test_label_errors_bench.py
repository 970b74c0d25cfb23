"""bench/label_errors.py without training: its metrics against hand counts and sklearn,
the paired bootstrap and t intervals, the scores it derives, the stratified folds, the plan
of runs per seed, the checkpoints it reads, the tables, and the one-line errors."""
import json
from pathlib import Path

from types import SimpleNamespace

import numpy as np
import pytest

from bench import label_errors, label_errors_arms
from bench.label_errors import flag_label_issues, parse_args, score_level
from bench.label_errors_arms import export_dir, fold_dir, make_fold_folders, plan, run_paths
from bench.label_errors_report import markdown_table
from bench.label_errors_scores import (auroc, normalised_margin, paired_bootstrap,
                                       per_class_normalised, ranking_metrics, reading,
                                       self_confidence, set_metrics, stratified_folds, summarise,
                                       t_interval)


def test_ranking_metrics_count_the_top_k_and_match_sklearn():
    from sklearn.metrics import roc_auc_score
    # 10 labels, 3 flipped (positions 1, 4, 8); suspicion ranks 1, 8, 0, 4, ... (highest first)
    suspicion = np.array([0.7, 0.9, 0.1, 0.2, 0.6, 0.3, 0.0, 0.4, 0.8, 0.5])
    flipped = np.zeros(10, dtype=bool)
    flipped[[1, 4, 8]] = True
    m = ranking_metrics(suspicion, flipped, ks=(2, 4))
    assert m["flipped"] == 3
    assert (m["precision@n"], m["recall@n"]) == pytest.approx((2 / 3, 2 / 3))  # top 3: 1, 8, 0
    assert (m["precision@2"], m["recall@2"]) == pytest.approx((1.0, 2 / 3))
    assert (m["precision@4"], m["recall@4"]) == pytest.approx((3 / 4, 1.0))    # + 4
    # 21 pairs: 4 (0.6) is below 0.7 only, so 20 of 21 are ordered right
    assert m["auroc"] == pytest.approx(20 / 21)
    assert m["auroc"] == pytest.approx(roc_auc_score(flipped, suspicion))


def test_ranking_metrics_break_ties_by_index_and_cap_k():
    m = ranking_metrics(np.zeros(4), np.array([False, False, True, True]), ks=(2, 10))
    assert m["precision@2"] == 0.0 and m["recall@2"] == 0.0  # ties: positions 0, 1 first
    assert m["precision@10"] == 0.5 and m["recall@10"] == 1.0  # K capped at the 4 labels
    assert m["auroc"] == 0.5
    assert ranking_metrics(np.arange(3.0), np.zeros(3, dtype=bool))["auroc"] is None


def test_set_metrics_of_a_flagged_set():
    flagged = np.array([True, True, False, True, False])
    flipped = np.array([True, False, False, True, True])
    assert set_metrics(flagged, flipped) == pytest.approx(
        {"flagged": 3, "precision": 2 / 3, "recall": 2 / 3})


def test_scores_self_confidence_margin_and_per_class_trust():
    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])
    given = np.array([0, 0, 2])
    assert self_confidence(probabilities, given).tolist() == pytest.approx([0.6, 0.2, 0.4])
    assert normalised_margin(probabilities, given).tolist() == pytest.approx([0.3, -0.5, -0.1])
    trust = np.array([2.0, 4.0, 6.0, 1.0, 3.0])
    labels = np.array([0, 0, 0, 1, 1])  # medians 4 and 2
    assert per_class_normalised(trust, labels).tolist() == pytest.approx([0.5, 1.0, 1.5, 0.5, 1.5])


def test_stratified_folds_deal_every_label_evenly():
    labels = np.repeat(np.arange(3), [8, 9, 11])
    fold = stratified_folds(labels, 4, seed=0)
    assert sorted(np.bincount(fold).tolist()) == [7, 7, 7, 7]
    for label in range(3):  # every class spread over the folds, at most one apart
        counts = np.bincount(fold[labels == label], minlength=4)
        assert counts.max() - counts.min() <= 1
    assert np.array_equal(fold, stratified_folds(labels, 4, seed=0))
    assert not np.array_equal(fold, stratified_folds(labels, 4, seed=1))


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--folds", "1"], "--folds must be 0 or >= 2"),
    (["--noise", "0.2", "1.0"], "--noise levels must be in (0, 1)")])
def test_bad_options_stop_in_one_line(capsys, tmp_path, argv, message):
    with pytest.raises(SystemExit) as stop:
        parse_args(["--out", str(tmp_path / "out")] + argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"label_errors.py: error: {message}\n"
    assert not (tmp_path / "out").exists()


def test_auroc_is_sklearns_with_ties_and_none_without_both_groups():
    from sklearn.metrics import roc_auc_score
    suspicion = np.array([0.3, 0.3, 0.9, 0.1, 0.3, 0.5])
    flipped = np.array([True, False, True, False, False, True])
    assert auroc(suspicion, flipped) == pytest.approx(roc_auc_score(flipped, suspicion))
    assert auroc(suspicion, flipped) == pytest.approx(8 / 9)  # 9 pairs; the two 0.3-0.3 pairs count half
    assert auroc(suspicion, np.zeros(6, dtype=bool)) is None


def test_paired_bootstrap_of_one_ranking_against_itself_is_zero():
    rng = np.random.default_rng(3)
    suspicion, flipped = rng.random(60), rng.random(60) < 0.3
    for metric in ("auroc", "precision@n"):
        result = paired_bootstrap(suspicion, suspicion.copy(), flipped, metric, resamples=200)
        assert (result["difference"], result["low"], result["high"]) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_of_a_perfect_ranking_against_its_reverse():
    flipped = np.array([True] * 4 + [False] * 16)
    perfect = np.linspace(1.0, 0.0, 20)  # the 4 flipped first
    result = paired_bootstrap(perfect, -perfect, flipped, "auroc", resamples=300)
    assert (result["difference"], result["low"], result["high"]) == (1.0, 1.0, 1.0)
    # a ranking that puts one flipped label last: P@flipped 3/4 against 1, in every draw <= 0
    one_missed = perfect.copy()
    one_missed[0] = -1.0
    result = paired_bootstrap(one_missed, perfect, flipped, "precision@n", resamples=300, seed=5)
    assert result["difference"] == pytest.approx(-0.25)
    assert result["low"] < -0.1 and result["high"] == 0.0  # draws without image 0 tie
    assert result == paired_bootstrap(one_missed, perfect, flipped, "precision@n",
                                      resamples=300, seed=5)  # seeded: the same interval


def test_t_interval_of_known_values():
    result = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / np.sqrt(3)  # t(0.975, 2 degrees of freedom) * sd 1 / sqrt(3)
    assert (result["n"], result["mean"], result["sd"]) == (3, 2.0, 1.0)
    assert (result["low"], result["high"]) == pytest.approx((2.0 - half, 2.0 + half))
    assert t_interval([0.25] * 5)["low"] == t_interval([0.25] * 5)["high"] == 0.25
    assert t_interval([0.4]) == {"n": 1, "mean": 0.4, "sd": None, "low": None, "high": None}


def test_reading_says_better_only_where_the_interval_excludes_zero():
    assert reading({"low": 0.001, "high": 0.02}) == "better"
    assert reading({"low": -0.03, "high": -0.002}) == "worse"
    assert reading({"low": -0.01, "high": 0.04}) == "comparable"
    assert reading({"low": None, "high": None}) is None


def plan_args(tmp_path, **overrides):
    values = dict(out=tmp_path, runs_root=tmp_path / "runs", dataset="FashionMNIST",
                  train_per_class=100, noise=[0.2, 0.4],
                  seeds=[1, 3], folds=2, full_runs=["Baseline", "WGHT", "BOTH"])
    values.update(overrides)
    return SimpleNamespace(**values)


def test_plan_gives_each_seed_its_export_run_folder_and_folds(tmp_path):
    jobs = plan(plan_args(tmp_path, full_runs=["BOTH"]))
    assert [job.key for job in jobs] == [
        f"seed{seed}/nr{noise}/{name}" for noise in ("0.2", "0.4") for seed in (1, 3)
        for name in ("BOTH", "fold0", "fold1")]
    both, fold1 = jobs[3], jobs[5]  # seed 3 at 20 %
    assert both.data_dir == tmp_path / "fashionmnist_100_seed3"
    assert (both.run_folder, both.noise, both.los_model, both.hyper_opt) == ("run3", 0.2, "BOTH", "HES")
    assert fold1.data_dir == tmp_path / "folds" / "fashionmnist_100_seed3_nr0.2_fold1"
    assert (fold1.run_folder, fold1.noise, fold1.los_model) == ("run3", 0.0, "NONE")
    # the fold folders wait for the split file the seed's full runs make
    assert fold1.prepare() is False and not (tmp_path / "folds").exists()


def test_plan_trains_the_chosen_full_runs_in_order(tmp_path):
    jobs = plan(plan_args(tmp_path, noise=[0.2], seeds=[2]))
    assert [job.key.split("/")[-1] for job in jobs] == ["BOTH", "Baseline", "fold0", "fold1", "WGHT"]
    assert [job.key.split("/")[-1] for job in plan(plan_args(tmp_path, noise=[0.2], seeds=[2],
                                                             folds=0, full_runs=["WGHT"]))] == ["WGHT"]


def test_the_command_trains_in_the_seeds_run_folder(tmp_path):
    args = plan_args(tmp_path, seeds=[4], noise=[0.4], epochs=20, nice=10, no_cuda=True)
    command = label_errors_arms.command(args, plan(args)[0])
    assert command[command.index("-r") + 1] == "run4"
    assert command[command.index("-nr") + 1] == "0.4"
    assert command[command.index("--data-dir") + 1] == str(tmp_path / "fashionmnist_100_seed4")


def write_seed_export(root: Path) -> Path:
    """Two classes, 6 train and 1 valid image each (official indices 0-11, then 12-13), 1 test
    image each; image i is filled with 10 * i, so a stand-in network knows which one it sees."""
    from PIL import Image
    index = 0
    for part, count in (("train", 6), ("valid", 1), ("test", 1)):
        for label in ("a", "b"):
            (root / part / label).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((8, 8), 10 * index, dtype=np.uint8)).save(
                    root / part / label / f"{i:02d}.png")
                index += 1
    return root


def test_scoring_reads_the_bestvalid_and_last_checkpoints_never_best(tmp_path, monkeypatch):
    import torch
    from custom_datasets.folder import dataset_name
    from custom_runs import run_files
    args = plan_args(tmp_path, seeds=[1], noise=[0.2], folds=2, full_runs=["BOTH"], epochs=3,
                     resamples=50)
    export = write_seed_export(export_dir(args, 1))
    official_labels = np.repeat([0, 1], 6)  # the train block, sorted by class
    noisy = np.concatenate([official_labels, [0, 1]])
    noisy[[0, 7]] = [1, 0]  # two labels flipped
    run_folder = run_files.run_dir(args.runs_root, dataset_name(export), "run1")
    run_folder.mkdir(parents=True)
    run_files.save_torch((torch.arange(12, 14), torch.arange(12), torch.as_tensor(noisy)),
                         run_folder / run_files.split_file_name(1, 1.0, 0.2))

    def finish(data_dir, los_model, hyper_opt, noise, minutes):
        folder, name, _ = run_paths(args.runs_root, data_dir, "run1", los_model, hyper_opt, noise)
        folder.mkdir(parents=True, exist_ok=True)
        run_files.save_json({"status": "finished", "epochs": 3, "best": {"acc": 50.0},
                             "final": {"acc": 50.0}, "timings_s": {"total": 60.0 * minutes}},
                            run_files.results_path(folder, name))
        for kind in ("valid", "best", "last"):
            run_files.save_torch({"reweight_state_dict": {"weight_logits": torch.zeros(14),
                                                          "soft_logits": torch.zeros(14, 2)}},
                                 run_files.checkpoint_path(folder, name, kind))

    jobs = {job.key: job for job in plan(args)}
    finish(export, "BOTH", "HES", 0.2, minutes=2.0)
    assert make_fold_folders(args, 1, 0.2)
    for k, minutes in enumerate((1.0, 1.5)):
        finish(fold_dir(args, 1, 0.2, k), "NONE", "NONE", 0.0, minutes)
    read = []

    def stand_in_network(path, model, settings, images, device):
        # the BOTH network: sure of every given label at its bestvalid_ epoch but of the flipped
        # ones only at its last_; the fold Baselines: 0.5 for every label
        read.append(path.name.split("_")[0])
        given = noisy[images[:, 0, 0, 0].long().numpy() // 10]
        flipped = given != official_labels[images[:, 0, 0, 0].long().numpy() // 10]
        if "_fold" in path.parent.parent.name:  # folder_{export}_nr0.2_fold{k}_{hash}
            confidence = np.full(len(given), 0.5)
        else:
            confidence = np.where(flipped, 0.1, 0.9) if path.name.startswith("bestvalid_") \
                else np.where(flipped, 0.9, 0.1)
        probabilities = np.empty((len(given), 2))
        probabilities[np.arange(len(given)), given] = confidence
        probabilities[np.arange(len(given)), 1 - given] = 1 - confidence
        return probabilities

    monkeypatch.setattr(label_errors, "network_probs", stand_in_network)
    level = score_level(args, 1, 0.2, jobs, "cpu")
    assert sorted(set(read)) == ["bestvalid", "last"]
    assert (level["train"], level["flipped"], level["missing_runs"]) == (12, 2, [])
    auroc = {m["name"]: m["metrics"]["auroc"] for m in level["methods"]}
    assert auroc["self-confidence, BOTH network (valid)"] == 1.0
    assert auroc["self-confidence, BOTH network (last)"] == 0.0
    assert auroc["cleanlab self_confidence, 2-fold Baselines (valid)"] == 0.5
    for kind, difference in (("valid", 0.5), ("last", -0.5)):
        paired = level["paired"][kind]["auroc"]
        assert (paired["difference"], paired["low"], paired["high"]) == (difference,) * 3
    assert level["costs"]["BOTH"]["train_minutes"] == 2.0
    assert level["costs"]["folds"]["train_minutes"] == 2.5 and level["costs"]["folds"]["runs"] == 2


def test_summary_over_seeds_and_its_tables():
    def level(seed, default_auroc, cleanlab_auroc, difference, both_minutes):
        def method(name, runs, value):
            return {"name": name, "runs": runs, "metrics": {
                "precision@n": value, "precision@50": value, "precision@100": value, "auroc": value}}
        paired = {metric: {"difference": difference, "low": difference - 0.01,
                           "high": difference + 0.01, "resamples": 10} for metric in ("auroc", "precision@n")}
        return {"seed": seed, "noise_ratio": 0.2, "train": 1000, "flipped": 180 + seed,
                "methods": [method("self-confidence, BOTH network (valid)", 1, default_auroc),
                            method("cleanlab self_confidence, 4-fold Baselines (valid)", 4, cleanlab_auroc)],
                "missing_runs": [], "paired": {"valid": paired},
                "costs": {"BOTH": {"runs": 1, "train_minutes": both_minutes, "scoring_s": 1.0},
                          "folds": {"runs": 4, "train_minutes": 6.0, "scoring_s": 3.0}},
                "find_label_issues": {"name": "default", "flagged": 300, "precision": 0.5, "recall": 0.8}}
    summary = summarise([level(1, 0.90, 0.88, 0.02, 2.0), level(2, 0.94, 0.90, 0.04, 4.0)])
    entry = summary["20%"]
    assert (entry["seeds"], entry["flipped"]) == ([1, 2], [181, 182])
    default = entry["rankings"][0]
    assert (default["seeds"], default["auroc"]["mean"]) == (2, pytest.approx(0.92))
    assert default["auroc"]["sd"] == pytest.approx(0.02 * np.sqrt(2))
    paired = entry["paired"]["valid"]["auroc"]
    half = 12.706204736174698 * 0.01 * np.sqrt(2) / np.sqrt(2)  # t(0.975, 1) * sd / sqrt(2)
    assert (paired["mean"], paired["low"], paired["high"]) == pytest.approx((0.03, 0.03 - half, 0.03 + half))
    assert paired["reading"] == "comparable" and [p["seed"] for p in paired["per_seed"]] == [1, 2]
    assert entry["costs"]["BOTH"]["train_minutes"] == 3.0
    table = markdown_table(summary, 4).splitlines()
    assert table[2] == ("| 20% | 2 | 181–182 / 1000 | self-confidence, BOTH network (valid) | 1 | "
                        "0.920 ± 0.028 | 0.920 ± 0.028 | 0.920 ± 0.028 | 0.920 ± 0.028 |")
    assert ("| 20% | valid | AUROC | 1: +0.020 [+0.010, +0.030]; 2: +0.040 [+0.030, +0.050] | +0.030 | "
            f"[{0.03 - half:+.3f}, {0.03 + half:+.3f}] | comparable |") in table
    assert entry["folds_to_both_minutes"] == [3.0, 1.5]
    assert "20%: the K-fold Baselines train 2.00× the minutes of the BOTH run (seed by seed 1.50–3.00×)." in table
    assert table[-1] == "| 20% | default (prune_by_noise_rate), mean over seeds | 300.0 | 0.500 | 0.800 |"
    json.dumps(summary)  # the JSON record holds the same entries


def test_find_label_issues_flags_in_this_process_without_a_pool(monkeypatch):
    import multiprocessing

    def no_pool(*args, **kwargs):
        raise AssertionError("a worker pool: its workers inherit the script's SIGTERM handler")
    monkeypatch.setattr(multiprocessing, "Pool", no_pool)
    given = np.repeat([0, 1], 10)
    probabilities = np.where(given[:, None] == np.arange(2), 0.95, 0.05)
    probabilities[[3, 14]] = probabilities[[3, 14], ::-1]  # the network is sure 3 and 14 are wrong
    flagged = flag_label_issues(given, probabilities)
    assert np.flatnonzero(flagged).tolist() == [3, 14]
