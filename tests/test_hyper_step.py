"""One hyper step of docs/design.md §4 wired into the models of §3: which rows move,
that the network does not, that non-finite hypergradients are skipped, the
closed form of the first step, and the row-wise RMSprop against torch's."""
import math

import pytest
import torch
import torch.nn.functional as F

from custom_common.settings import get_settings
from custom_datasets.sources import load_digits
from custom_models.hyper_models import AugmentModel, LossModel, RowRMSprop
from custom_models.networks import build_network
from custom_models.training import HyperState, Network, hyper_epoch, hyper_step
from custom_transforms import affine
from custom_transforms.base import normalize

SETTINGS = get_settings("DIGITS")
BATCH = 16
HYPER_LR = 0.05
TRAIN_ROWS = torch.arange(0, 200)  # rows of the official train set used as "train" here
VALID_ROWS = torch.arange(1200, 1264)


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    assert len(data.train_targets) == SETTINGS.train_size
    return normalize(data.train_images, SETTINGS), data.train_targets


def make_network(seed=0):
    torch.manual_seed(seed)
    encoder, decoder = build_network("resnet18", SETTINGS)
    network = Network(encoder, decoder)
    network.train(False)
    return network


def make_hyper(digits, loss_mode="BOTH", augment_mode="SEP", noisy=None, iterations=5):
    _, targets = digits
    noisy = targets.clone() if noisy is None else noisy
    loss_model = LossModel(SETTINGS.train_size, SETTINGS.num_classes, loss_mode, noisy, distorted=True)
    augment_model = AugmentModel(SETTINGS.train_size, augment_mode) if augment_mode else None
    tables = dict(loss_model.learned_tables())
    if augment_model is not None:
        tables.update(augment_model.learned_tables())
    return HyperState(loss_model, augment_model, RowRMSprop(tables, lr=HYPER_LR), iterations, 0.01)


def train_batch(digits, rows):
    images, targets = digits
    return images[rows].clone(), targets[rows].clone(), rows


def batches(digits, number=0):
    """Train batch `number` of one shuffled pass (disjoint for different numbers) and a valid batch."""
    order = TRAIN_ROWS[torch.randperm(len(TRAIN_ROWS), generator=torch.Generator().manual_seed(0))]
    train = train_batch(digits, order[number * BATCH:(number + 1) * BATCH])
    valid_order = torch.randperm(len(VALID_ROWS), generator=torch.Generator().manual_seed(number + 1))
    return train, train_batch(digits, VALID_ROWS[valid_order[:BATCH]])


def all_tables(hyper):
    tables = {"weight_logits": hyper.loss_model.weight_logits, "soft_logits": hyper.loss_model.soft_logits}
    if hyper.augment_model is not None:
        tables.update(hyper.augment_model.learned_tables())
    return {name: table.clone() for name, table in tables.items()}


def changed_rows(before, after):
    difference = (before != after)
    return difference.reshape(difference.shape[0], -1).any(-1)


def spy_on_optimizer(hyper):
    """Records what hyper_step hands to the row optimiser."""
    calls = []
    step = hyper.optimizer.step

    def recording_step(row_indices, grads, *rest, **options):
        calls.append(({k: v.clone() for k, v in row_indices.items()},
                      {k: None if g is None else g.clone() for k, g in grads.items()}))
        return step(row_indices, grads, *rest, **options)
    hyper.optimizer.step = recording_step
    return calls


# ----------------------------------------------------------------------------- which rows move

def test_hyper_step_changes_the_sampled_rows_of_every_learned_table_and_nothing_else(digits):
    network = make_network()
    hyper = make_hyper(digits, "BOTH", "SEP")
    with torch.no_grad():  # apply most parameters, so every sampled row's magnitude matters
        hyper.augment_model.probability_logits.fill_(3.0)
    train, valid = batches(digits)
    before = all_tables(hyper)
    torch.manual_seed(0)
    result, finite = hyper_step(network, hyper, train, valid)
    assert bool(finite) and result.finite()
    after = all_tables(hyper)
    sampled = torch.zeros(SETTINGS.train_size, dtype=torch.bool)
    sampled[train[2]] = True
    for name in ("weight_logits", "soft_logits", "probability_logits", "magnitude_logits"):
        changed = changed_rows(before[name], after[name])
        assert torch.equal(changed, sampled), name  # every sampled row moved, no other row did
        assert torch.equal(before[name][~sampled], after[name][~sampled]), name  # bit-identical


def test_first_hyper_step_moves_each_entry_ten_learning_rates_against_its_hypergradient(digits):
    """RMSprop from a zero average: avg = 0.01 g^2, so the step is lr * g / (0.1 |g|) = 10 lr sign(g)."""
    network = make_network()
    hyper = make_hyper(digits, "BOTH", "SEP")
    calls = spy_on_optimizer(hyper)
    train, valid = batches(digits)
    before = all_tables(hyper)
    torch.manual_seed(0)
    hyper_step(network, hyper, train, valid)
    after = all_tables(hyper)
    (row_indices, grads), = calls
    assert set(grads) == {"weight_logits", "soft_logits", "probability_logits", "magnitude_logits"}
    for name, grad in grads.items():
        assert torch.equal(row_indices[name], train[2])
        assert grad.shape == before[name][train[2]].shape
        assert torch.isfinite(grad).all()
        step = (after[name][train[2]] - before[name][train[2]]).double()
        g = grad.double()
        expected = -HYPER_LR * g / (torch.sqrt(0.01 * g * g) + 1e-8)
        assert torch.allclose(step, expected, rtol=1e-4, atol=1e-6), name
        large = g.abs() > 1e-4  # where eps = 1e-8 does not matter: a step of 10 lr
        assert bool(large.any()), name
        assert torch.allclose(step[large], -10 * HYPER_LR * torch.sign(g[large]), rtol=1e-3, atol=0)


def test_shared_augmentation_moves_only_its_single_row_and_no_loss_table_when_loss_model_is_none(digits):
    network = make_network()
    hyper = make_hyper(digits, "NONE", "SHA")
    assert set(hyper.optimizer.tables) == {"probability_logits", "magnitude_logits"}
    train, valid = batches(digits)
    before = all_tables(hyper)
    torch.manual_seed(0)
    _, finite = hyper_step(network, hyper, train, valid)
    assert bool(finite)
    after = all_tables(hyper)
    assert before["probability_logits"].shape == (1, 7)
    assert not torch.equal(before["probability_logits"], after["probability_logits"])
    assert torch.equal(before["weight_logits"], after["weight_logits"])
    assert torch.equal(before["soft_logits"], after["soft_logits"])


def test_weight_only_model_leaves_soft_labels_alone(digits):
    network = make_network()
    hyper = make_hyper(digits, "WGHT", None)
    train, valid = batches(digits)
    before = all_tables(hyper)
    hyper_step(network, hyper, train, valid)
    after = all_tables(hyper)
    assert torch.equal(changed_rows(before["weight_logits"], after["weight_logits"]).nonzero().flatten(),
                       torch.sort(train[2]).values)
    assert torch.equal(before["soft_logits"], after["soft_logits"])


# ----------------------------------------------------------------------------- the network stays put

def test_hyper_epoch_leaves_network_weights_batch_norm_statistics_and_grads_unchanged(digits):
    network = make_network()
    network.train(True)  # hyper_epoch must put it in eval mode itself
    hyper = make_hyper(digits, "BOTH", "SEP")
    state = {k: v.clone() for k, v in {**network.encoder.state_dict(),
                                       **{"decoder." + k: v for k, v in network.decoder.state_dict().items()}}.items()}
    train_batches = [batches(digits, number)[0] for number in (0, 1, 2)]
    valid_batches = iter([batches(digits, number)[1] for number in (0, 1, 2)])
    rates = [0.05, 0.04, 0.03]
    stats = hyper_epoch(network, hyper, train_batches, valid_batches, lambda step: rates[step], max_steps=2)
    assert stats.steps == 2 and stats.skipped == 0
    assert hyper.optimizer.lr == 0.04  # the rate of the last step taken
    assert hyper.optimizer.step_count == 2
    assert stats.g_norm_sq > 0 and stats.v_norm_sq > 0
    assert stats.divergence == pytest.approx(stats.g_norm_sq + stats.v_norm_sq - 2 * stats.g_dot_v)
    assert not network.encoder.training and not network.decoder.training
    now = {**network.encoder.state_dict(), **{"decoder." + k: v for k, v in network.decoder.state_dict().items()}}
    assert set(now) == set(state)
    for name, value in state.items():
        assert torch.equal(value, now[name]), name
    assert all(p.grad is None for p in network.parameters())


def test_hypergradient_of_a_hyper_step_is_finite_and_the_diagnostics_are_positive(digits):
    network = make_network()
    hyper = make_hyper(digits, "BOTH", "SEP")
    train, valid = batches(digits)
    torch.manual_seed(0)
    result, finite = hyper_step(network, hyper, train, valid)
    assert bool(finite)
    shapes = sorted(tuple(g.shape) for g in result.grads)
    assert shapes == sorted([(BATCH,), (BATCH, 10), (BATCH, 7), (BATCH, 7)])
    assert result.finite()
    assert all(bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0 for g in result.grads)
    assert float(result.g_norm_sq) > 0 and float(result.v_norm_sq) > 0


# ----------------------------------------------------------------------------- closed form

@pytest.mark.parametrize("augment_mode, resample_every_configuration, resampled", [
    ("SEP", True, True), (None, True, True), ("SEP", False, True), (None, False, False)])
def test_first_order_weight_hypergradient_matches_closed_form(
        digits, augment_mode, resample_every_configuration, resampled):
    """With J = 0 Neumann terms u = -v, so for L_t = mean_i w(λ_i) CE_i

        ∂<g, u>/∂λ_i = -(1/B) w'(λ_i) <(softmax_i - onehot(y_i)) f_iᵀ, v>,   w'(0) = ½ / ln 2,

    with y_i the stored (noisy) label, f_i the train features and v the valid-loss
    gradient on the clean labels of the valid images; both batches identity-resampled
    with a learned augmentation, and without one too unless `--paper-text baselines`."""
    images, targets = digits
    noisy = targets.clone()
    train, valid = batches(digits)
    noisy[train[2][:5]] = (targets[train[2][:5]] + 3) % 10  # plant wrong labels in the batch
    network = make_network()
    hyper = make_hyper(digits, "WGHT", augment_mode, noisy=noisy, iterations=0)
    hyper.resample_every_configuration = resample_every_configuration
    if augment_mode is not None:
        with torch.no_grad():
            hyper.augment_model.probability_logits.fill_(-30.0)  # never applied: identity warp
    calls = spy_on_optimizer(hyper)
    hyper_step(network, hyper, train, valid)
    grad = calls[0][1]["weight_logits"]

    look = affine.resample if resampled else (lambda images: images)
    with torch.no_grad():
        valid_features = network.features(look(valid[0]))
        train_features = network.features(look(train[0]))
    theta = network.decoder.weight.detach().clone().requires_grad_(True)
    valid_loss = F.cross_entropy(F.linear(valid_features, theta, network.decoder.bias.detach()), valid[1])
    v = torch.autograd.grad(valid_loss, theta)[0]
    logits = network.decoder(train_features).detach()
    residual = F.softmax(logits, -1) - F.one_hot(noisy[train[2]], 10).float()
    per_sample = torch.einsum("bc,cf,bf->b", residual, v, train_features)
    expected = -(0.5 / math.log(2)) * per_sample / BATCH
    assert torch.allclose(grad, expected, rtol=1e-3, atol=1e-7)
    # and the resample counts: the other look at the valid batch gives another v
    other = network.features(valid[0] if resampled else affine.resample(valid[0])).detach()
    v_other = torch.autograd.grad(
        F.cross_entropy(F.linear(other, theta, network.decoder.bias.detach()), valid[1]), theta)[0]
    assert (v_other - v).norm() > 1e-2 * v.norm()


# ----------------------------------------------------------------------------- non-finite steps

@pytest.mark.parametrize("where", ["train", "valid"])
def test_a_nan_image_makes_the_step_be_skipped_and_counted(digits, where):
    network = make_network()
    hyper = make_hyper(digits, "BOTH", "SEP")
    train, valid = batches(digits)
    batch = train if where == "train" else valid
    batch[0][3, 0, 4, 4] = float("nan")
    before = all_tables(hyper)
    torch.manual_seed(0)
    stats = hyper_epoch(network, hyper, [train], iter([valid]), lambda step: HYPER_LR)
    assert (stats.steps, stats.skipped, hyper.skipped_steps) == (0, 1, 1)
    after = all_tables(hyper)
    for name in before:
        assert torch.equal(before[name], after[name]), name
    for name, average in hyper.optimizer.square_avg.items():
        assert torch.isfinite(average).all() and not average.any(), name  # nothing learned from it
    # the diagnostics of a skipped step are not averaged in
    assert (stats.g_norm_sq, stats.v_norm_sq, stats.g_dot_v) == (0.0, 0.0, 0.0)


def test_non_finite_hypergradient_is_skipped_inside_a_hyper_epoch(digits, monkeypatch):
    import custom_models.training as training
    real = training.hypergradient

    def poisoned(*args, **kwargs):
        result = real(*args, **kwargs)
        if poisoned.calls == 1:
            result.grads[0] = result.grads[0].clone()
            result.grads[0].view(-1)[0] = float("inf")
        poisoned.calls += 1
        return result
    poisoned.calls = 0
    monkeypatch.setattr(training, "hypergradient", poisoned)

    network = make_network()
    hyper = make_hyper(digits, "WGHT", None)
    pairs = [batches(digits, number) for number in (0, 1, 2)]
    before = all_tables(hyper)
    stats = hyper_epoch(network, hyper, [p[0] for p in pairs], iter([p[1] for p in pairs]),
                        lambda step: HYPER_LR)
    assert (stats.steps, stats.skipped, hyper.skipped_steps) == (2, 1, 1)
    changed = changed_rows(before["weight_logits"], hyper.loss_model.weight_logits)
    moved = torch.zeros(SETTINGS.train_size, dtype=torch.bool)
    moved[pairs[0][0][2]] = True  # the second batch's step was skipped
    moved[pairs[2][0][2]] = True
    assert torch.equal(changed, moved)


# ----------------------------------------------------------------------------- RowRMSprop

@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_row_rmsprop_equals_dense_rmsprop_with_zero_grads_elsewhere(dtype, tolerance):
    generator = torch.Generator().manual_seed(0)
    rows, classes = 30, 4
    initial = {"vector": torch.randn(rows, generator=generator, dtype=dtype),
               "matrix": torch.randn(rows, classes, generator=generator, dtype=dtype)}
    lazy_tables = {k: v.clone() for k, v in initial.items()}
    dense = {k: v.clone().requires_grad_(True) for k, v in initial.items()}
    lazy = RowRMSprop(lazy_tables, lr=0.05)
    reference = torch.optim.RMSprop(list(dense.values()), lr=0.05, alpha=0.99, eps=1e-8)
    names = list(dense)
    # subsets overlap, skip rows for many steps, and one table sits out a step
    subsets = [[0, 1, 2, 3], [2, 3, 4], [10, 11, 0], [], [1, 29, 10], [0, 1, 2, 3, 4, 5, 6, 7],
               [29], [5, 6, 15], [0, 29], [3, 2, 1]]
    rates = [0.05, 0.05, 0.04, 0.04, 0.03, 0.02, 0.05, 0.01, 0.01, 0.05]
    for step, (subset, rate) in enumerate(zip(subsets, rates)):
        index = torch.tensor(subset, dtype=torch.long)
        grads = {k: torch.randn((len(subset),) + initial[k].shape[1:], generator=generator, dtype=dtype)
                 for k in names}
        if step == 4:
            grads["matrix"] = None  # a table with no gradient this step (a dense zero grad)
        lazy.lr = rate
        lazy.step({k: index for k in names}, grads)
        for group in reference.param_groups:
            group["lr"] = rate
        for k in names:
            full = torch.zeros_like(initial[k])
            if grads[k] is not None:
                full[index] = grads[k]
            dense[k].grad = full
        reference.step()
        for k in names:
            assert torch.allclose(lazy_tables[k], dense[k].detach(), atol=tolerance, rtol=0), (step, k)
    for k in names:
        assert not torch.equal(lazy_tables[k], initial[k])
        assert torch.equal(lazy_tables[k][20:29], initial[k][20:29])  # never touched


def test_row_rmsprop_resumes_from_its_state_dict_exactly():
    generator = torch.Generator().manual_seed(1)
    initial = torch.randn(12, 3, generator=generator)
    grads = [torch.randn(3, 3, generator=generator) for _ in range(6)]
    indices = [torch.tensor(i) for i in ([0, 1, 2], [5, 6, 7], [0, 6, 11], [1, 2, 3], [4, 5, 6], [0, 11, 9])]

    straight_table = initial.clone()
    straight = RowRMSprop({"t": straight_table}, lr=0.05)
    for index, grad in zip(indices, grads):
        straight.step({"t": index}, {"t": grad})

    first_table = initial.clone()
    first = RowRMSprop({"t": first_table}, lr=0.05)
    for index, grad in zip(indices[:3], grads[:3]):
        first.step({"t": index}, {"t": grad})
    state = {k: ({n: t.clone() for n, t in v.items()} if isinstance(v, dict) else v)
             for k, v in first.state_dict().items()}
    resumed_table = first_table.clone()
    resumed = RowRMSprop({"t": resumed_table}, lr=1.0)
    resumed.load_state_dict(state)
    for index, grad in zip(indices[3:], grads[3:]):
        resumed.step({"t": index}, {"t": grad})
    assert torch.equal(resumed_table, straight_table)


def test_row_rmsprop_skipped_step_equals_a_dense_step_with_zero_gradients():
    """A non-finite step is skipped on the device (finite=False): the rows keep their
    values, and the optimiser state is what dense RMSprop has after a zero gradient."""
    generator = torch.Generator().manual_seed(2)
    initial = torch.randn(10, 3, generator=generator, dtype=torch.float64)
    table = initial.clone()
    dense = initial.clone().requires_grad_(True)
    lazy = RowRMSprop({"t": table}, lr=0.05)
    reference = torch.optim.RMSprop([dense], lr=0.05, alpha=0.99, eps=1e-8)
    plan = [([0, 1, 2], True), ([1, 2, 3], False), ([2, 3, 4], True), ([0, 4, 9], True)]
    for step, (subset, finite) in enumerate(plan):
        index = torch.tensor(subset)
        grad = torch.randn(3, 3, generator=generator, dtype=torch.float64)
        if not finite:
            grad[1, 2] = float("nan")
        before = table.clone()
        lazy.step({"t": index}, {"t": grad}, torch.tensor(finite))
        if not finite:
            assert torch.equal(table, before)
        full = torch.zeros_like(initial)
        if finite:
            full[index] = grad
        dense.grad = full
        reference.step()
        assert torch.allclose(table, dense.detach(), atol=1e-12, rtol=0), step
        assert torch.isfinite(lazy.square_avg["t"]).all()
