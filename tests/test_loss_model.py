"""The loss model of docs/design.md §3.1: per-sample weights and soft labels, their
initial values, the train-loss formulas of every mode and which tables learn."""
import math

import pytest
import torch
import torch.nn.functional as F

from custom_models.hyper_models import LOSS_MODELS, SOFT_LABEL_EPSILON, LossModel


def make_model(mode, labels, num_classes, distorted=True, num_train=None):
    labels = torch.as_tensor(labels)
    return LossModel(num_train or len(labels), num_classes, mode, labels, distorted)


def test_initial_weight_is_exactly_one():
    model = make_model("BOTH", torch.arange(7) % 3, 3)
    assert torch.equal(model.weight_logits, torch.zeros(7))
    weights = LossModel.weights(model.weight_logits)
    assert torch.equal(weights, torch.ones(7))  # softplus(0) / ln 2, bit-exact
    # and it is softplus / ln 2 away from zero too
    logits = torch.tensor([-3.0, 0.5, 4.0])
    expected = torch.tensor([math.log1p(math.exp(x)) / math.log(2.0) for x in (-3.0, 0.5, 4.0)])
    assert torch.allclose(LossModel.weights(logits), expected, atol=1e-6)


@pytest.mark.parametrize("num_classes", [10, 100])
def test_initial_soft_labels_are_label_smoothed_one_hots(num_classes):
    labels = torch.randint(0, num_classes, (50,), generator=torch.Generator().manual_seed(num_classes))
    model = make_model("SOFT", labels, num_classes)
    probabilities = F.softmax(model.soft_logits.double(), -1)
    epsilon = SOFT_LABEL_EPSILON
    assert epsilon == 0.05
    true_class = probabilities[torch.arange(50), labels]
    assert torch.allclose(true_class, torch.full((50,), 1 - epsilon + epsilon / num_classes,
                                                 dtype=torch.float64), atol=1e-6, rtol=0)
    others = probabilities.clone()
    others[torch.arange(50), labels] = float("nan")
    others = others[~torch.isnan(others)]
    assert others.numel() == 50 * (num_classes - 1)
    assert torch.allclose(others, torch.full_like(others, epsilon / num_classes), atol=1e-7, rtol=0)


def test_soft_labels_are_the_softmax_of_the_soft_logits():
    # what get-results.py --suspects reads as the soft labels of a run's tables
    model = make_model("BOTH", [2, 0, 1], 3)
    soft = LossModel.soft_labels(model.soft_logits)
    assert torch.equal(soft, F.softmax(model.soft_logits, -1))
    assert soft[torch.arange(3), torch.tensor([2, 0, 1])].tolist() == pytest.approx([1 - 0.05 + 0.05 / 3] * 3)
    assert soft.sum(-1).tolist() == pytest.approx([1.0] * 3)


def test_soft_label_logits_are_d_times_centred_one_hot():
    num_classes = 10
    model = make_model("SOFT", [3, 0], num_classes)
    d = math.log(1 - num_classes + num_classes / 0.05)  # ln 191
    expected = torch.full((2, num_classes), -d / 2)
    expected[0, 3] = expected[1, 0] = d / 2
    assert torch.allclose(model.soft_logits, expected, atol=1e-6)


def test_argmax_of_initial_soft_labels_is_the_given_noisy_label():
    noisy = torch.tensor([9, 0, 4, 4, 7, 1, 2, 8, 3, 5, 6, 0])
    for mode in LOSS_MODELS:
        model = make_model(mode, noisy, 10)
        assert torch.equal(model.soft_logits.argmax(-1), noisy)


# ----------------------------------------------------------------------------- train loss

def tiny_batch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, generator=generator) * 2
    weight_logits = torch.tensor([0.0, -1.0, 2.0, 0.3])
    soft_logits = torch.randn(4, 3, generator=generator) * 3
    return logits, {"weight_logits": weight_logits, "soft_logits": soft_logits}


def hand_weights(weight_logits):
    return [math.log(1 + math.exp(w)) / math.log(2) for w in weight_logits.tolist()]


def hand_softmax(row):
    exps = [math.exp(x) for x in row]
    return [e / sum(exps) for e in exps]


def hand_kl(q, p):
    return sum(qi * (math.log(qi) - math.log(pi)) for qi, pi in zip(q, p))


@pytest.mark.parametrize("mode", ["NONE", "WGHT"])
def test_hard_label_modes_use_weighted_cross_entropy_with_argmax_of_soft_labels(mode):
    logits, rows = tiny_batch()
    model = make_model(mode, [0, 0, 0, 0], 3)
    expected = 0.0
    for i, weight in enumerate(hand_weights(rows["weight_logits"])):
        target = max(range(3), key=lambda c: rows["soft_logits"][i, c].item())
        p = hand_softmax(logits[i].tolist())
        expected += weight * -math.log(p[target])
    expected /= 4
    loss = model.train_loss(logits, rows)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # the model's own stored labels are not what is used: the rows passed in are
    assert rows["soft_logits"].argmax(-1).tolist() != [0, 0, 0, 0]


@pytest.mark.parametrize("mode", ["SOFT", "BOTH"])
def test_soft_modes_use_weighted_symmetric_kl_when_data_is_distorted(mode):
    logits, rows = tiny_batch()
    model = make_model(mode, [0, 0, 0, 0], 3, distorted=True)
    expected = []
    for i, weight in enumerate(hand_weights(rows["weight_logits"])):
        q = hand_softmax(rows["soft_logits"][i].tolist())
        p = hand_softmax(logits[i].tolist())
        expected.append(weight * 0.5 * (hand_kl(q, p) + hand_kl(p, q)))
    per_sample = model.train_loss(logits, rows, reduce=False)
    assert per_sample.tolist() == pytest.approx(expected, rel=1e-5)
    assert model.train_loss(logits, rows).item() == pytest.approx(sum(expected) / 4, rel=1e-5)


@pytest.mark.parametrize("mode", ["SOFT", "BOTH"])
def test_soft_modes_use_weighted_forward_kl_when_data_is_clean(mode):
    logits, rows = tiny_batch()
    model = make_model(mode, [0, 0, 0, 0], 3, distorted=False)
    expected = []
    for i, weight in enumerate(hand_weights(rows["weight_logits"])):
        q = hand_softmax(rows["soft_logits"][i].tolist())
        p = hand_softmax(logits[i].tolist())
        expected.append(weight * hand_kl(q, p))
    assert model.train_loss(logits, rows, reduce=False).tolist() == pytest.approx(expected, rel=1e-5)
    assert model.train_loss(logits, rows).item() == pytest.approx(sum(expected) / 4, rel=1e-5)


def test_symmetric_and_forward_kl_differ_on_this_batch():
    """Guards the two tests above against a batch where the two divergences coincide."""
    logits, rows = tiny_batch()
    distorted = make_model("SOFT", [0] * 4, 3, distorted=True).train_loss(logits, rows)
    clean = make_model("SOFT", [0] * 4, 3, distorted=False).train_loss(logits, rows)
    assert abs(distorted.item() - clean.item()) > 1e-2


def test_soft_label_loss_is_zero_when_prediction_equals_soft_label():
    _, rows = tiny_batch()
    model = make_model("SOFT", [0] * 4, 3, distorted=True)
    loss = model.train_loss(rows["soft_logits"] + 5.0, rows, reduce=False)  # same softmax
    assert torch.allclose(loss, torch.zeros(4), atol=1e-6)


# ----------------------------------------------------------------------------- learned tables

@pytest.mark.parametrize("mode, learned", [
    ("NONE", set()),
    ("WGHT", {"weight_logits"}),
    ("SOFT", {"soft_logits"}),
    ("BOTH", {"weight_logits", "soft_logits"}),
])
def test_learned_tables_per_mode(mode, learned):
    model = make_model(mode, [1, 2, 0, 1, 2], 3)
    tables = model.learned_tables()
    assert set(tables) == learned
    for name, table in tables.items():
        assert table is getattr(model, name)  # the buffer itself, so optimiser steps land in it


@pytest.mark.parametrize("mode, learned", [
    ("NONE", set()),
    ("WGHT", {"weight_logits"}),
    ("SOFT", {"soft_logits"}),
    ("BOTH", {"weight_logits", "soft_logits"}),
])
def test_rows_are_leaves_requiring_grad_only_for_learned_tables(mode, learned):
    model = make_model(mode, [1, 2, 0, 1, 2], 3)
    model.weight_logits.copy_(torch.arange(5.0))
    indices = torch.tensor([4, 1])
    rows = model.rows(indices, requires_grad=True)
    assert set(rows) == {"weight_logits", "soft_logits"}
    for name, row in rows.items():
        assert row.is_leaf
        assert row.requires_grad == (name in learned)
        assert torch.equal(row, getattr(model, name)[indices])
    assert rows["weight_logits"].tolist() == [4.0, 1.0]
    for row in model.rows(indices).values():  # the training step: no leaf asks for a gradient
        assert not row.requires_grad


def test_rows_are_copies_so_writing_them_leaves_the_table_alone():
    model = make_model("BOTH", [1, 2, 0], 3)
    rows = model.rows(torch.tensor([0, 2]), requires_grad=True)
    with torch.no_grad():
        rows["weight_logits"] += 1.0
    assert torch.equal(model.weight_logits, torch.zeros(3))


def test_hypergradient_reaches_weight_rows_through_the_train_loss():
    model = make_model("WGHT", [0, 1, 2, 1], 3)
    rows = model.rows(torch.arange(4), requires_grad=True)
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    model.train_loss(logits, rows).backward()
    # d/dw_i of mean(softplus(w)/ln2 * CE_i) at w = 0 is sigmoid(0)/ln2 * CE_i / B
    ce = F.cross_entropy(logits, torch.tensor([0, 1, 2, 1]), reduction="none")
    assert torch.allclose(rows["weight_logits"].grad, 0.5 / math.log(2) * ce / 4, atol=1e-6)


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown loss model"):
        make_model("HARD", [0, 1], 2)
