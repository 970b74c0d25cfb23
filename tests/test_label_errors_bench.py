"""bench/label_errors.py without training: its metrics against hand counts and sklearn,
the scores it derives, the stratified folds, the table, and the one-line errors."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "label_errors.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("label_errors_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ranking_metrics_count_the_top_k_and_match_sklearn(bench):
    from sklearn.metrics import roc_auc_score
    # 10 labels, 3 flipped (positions 1, 4, 8); suspicion ranks 1, 8, 0, 4, ... (highest first)
    suspicion = np.array([0.7, 0.9, 0.1, 0.2, 0.6, 0.3, 0.0, 0.4, 0.8, 0.5])
    flipped = np.zeros(10, dtype=bool)
    flipped[[1, 4, 8]] = True
    m = bench.ranking_metrics(suspicion, flipped, ks=(2, 4))
    assert m["flipped"] == 3
    assert (m["precision@n"], m["recall@n"]) == pytest.approx((2 / 3, 2 / 3))  # top 3: 1, 8, 0
    assert (m["precision@2"], m["recall@2"]) == pytest.approx((1.0, 2 / 3))
    assert (m["precision@4"], m["recall@4"]) == pytest.approx((3 / 4, 1.0))    # + 4
    # 21 pairs: 4 (0.6) is below 0.7 only, so 20 of 21 are ordered right
    assert m["auroc"] == pytest.approx(20 / 21)
    assert m["auroc"] == pytest.approx(roc_auc_score(flipped, suspicion))


def test_ranking_metrics_break_ties_by_index_and_cap_k(bench):
    m = bench.ranking_metrics(np.zeros(4), np.array([False, False, True, True]), ks=(2, 10))
    assert m["precision@2"] == 0.0 and m["recall@2"] == 0.0  # ties: positions 0, 1 first
    assert m["precision@10"] == 0.5 and m["recall@10"] == 1.0  # K capped at the 4 labels
    assert m["auroc"] == 0.5
    assert bench.ranking_metrics(np.arange(3.0), np.zeros(3, dtype=bool))["auroc"] is None


def test_set_metrics_of_a_flagged_set(bench):
    flagged = np.array([True, True, False, True, False])
    flipped = np.array([True, False, False, True, True])
    assert bench.set_metrics(flagged, flipped) == pytest.approx(
        {"flagged": 3, "precision": 2 / 3, "recall": 2 / 3})


def test_scores_self_confidence_margin_and_per_class_trust(bench):
    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])
    given = np.array([0, 0, 2])
    assert bench.self_confidence(probabilities, given).tolist() == pytest.approx([0.6, 0.2, 0.4])
    assert bench.normalised_margin(probabilities, given).tolist() == pytest.approx([0.3, -0.5, -0.1])
    trust = np.array([2.0, 4.0, 6.0, 1.0, 3.0])
    labels = np.array([0, 0, 0, 1, 1])  # medians 4 and 2
    assert bench.per_class_normalised(trust, labels).tolist() == pytest.approx([0.5, 1.0, 1.5, 0.5, 1.5])


def test_stratified_folds_deal_every_label_evenly(bench):
    labels = np.repeat(np.arange(3), [8, 9, 11])
    fold = bench.stratified_folds(labels, 4, seed=0)
    assert sorted(np.bincount(fold).tolist()) == [7, 7, 7, 7]
    for label in range(3):  # every class spread over the folds, at most one apart
        counts = np.bincount(fold[labels == label], minlength=4)
        assert counts.max() - counts.min() <= 1
    assert np.array_equal(fold, bench.stratified_folds(labels, 4, seed=0))
    assert not np.array_equal(fold, bench.stratified_folds(labels, 4, seed=1))


def test_markdown_table_has_a_row_per_method_with_its_numbers(bench):
    metrics = bench.ranking_metrics(np.array([0.9, 0.1, 0.8, 0.2]), np.array([True, False, True, False]))
    levels = {"20%": {"train": 4, "flipped": 2, "methods": [
        {"name": "self-confidence, Baseline network (best)", "runs": 1, "metrics": metrics}],
        "find_label_issues": {"name": "default", "flagged": 3, "precision": 2 / 3, "recall": 1.0}}}
    table = bench.markdown_table(levels).splitlines()
    assert table[2] == ("| 20% | 2 / 4 | self-confidence, Baseline network (best) | 1 | 1.000 | "
                        "0.500 | 1.000 | 0.500 | 1.000 | 1.000 |")
    assert table[-1] == "| 20% | default | 3 | 0.667 | 1.000 |"
    json.dumps(levels)  # the JSON record holds the same entries


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--folds", "1"], "--folds must be 0 or >= 2"),
    (["--noise", "0.2", "1.0"], "--noise levels must be in (0, 1)")])
def test_bad_options_stop_in_one_line(bench, capsys, tmp_path, argv, message):
    with pytest.raises(SystemExit) as stop:
        bench.parse_args(["--out", str(tmp_path / "out")] + argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"label_errors.py: error: {message}\n"
    assert not (tmp_path / "out").exists()
