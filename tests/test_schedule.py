"""The learning-rate rule of docs/design.md §5 (custom_models.schedule.learning_rate),
checked against the formula written out here:

    cosine(e)  = lr·f + (lr − lr·f) · ½ · (1 + cos(π · e / (E − 1)))     f = 1e-3
    warm-up    : epochs 0..4, per batch, linear from lr/10 to cosine(5)
    step decay : lr · rate ** (number of milestones ≤ e)
"""
import math

import pytest

from custom_models.schedule import learning_rate

LR = 0.1
EPOCHS = 200
BATCHES = 100
FINAL = 1e-3
WARM = 5


def cosine(epoch, lr=LR, epochs=EPOCHS, final=FINAL):
    low = lr * final
    return low + (lr - low) * 0.5 * (1.0 + math.cos(math.pi * epoch / (epochs - 1)))


def rate(epoch, batch, **kwargs):
    options = dict(base_lr=LR, batches_per_epoch=BATCHES, epochs=EPOCHS)
    options.update(kwargs)
    return learning_rate(epoch=epoch, batch=batch, **options)


def test_first_batch_rate_is_a_tenth_of_lr():
    assert rate(0, 0) == pytest.approx(LR / 10, rel=1e-12)


@pytest.mark.parametrize("epoch, batch", [(0, 1), (0, 99), (1, 0), (2, 50), (4, 99)])
def test_warm_up_is_linear_per_batch_from_lr_over_10_to_cosine_at_epoch_5(epoch, batch):
    start, target = LR / 10, cosine(WARM)
    step = epoch * BATCHES + batch
    expected = start + (target - start) * step / (WARM * BATCHES)
    assert rate(epoch, batch) == pytest.approx(expected, rel=1e-12)


def test_warm_up_increments_are_equal_across_epoch_boundaries():
    rates = [rate(epoch, batch) for epoch in range(WARM) for batch in range(BATCHES)]
    increments = [b - a for a, b in zip(rates, rates[1:])]
    expected = (cosine(WARM) - LR / 10) / (WARM * BATCHES)
    assert len(increments) == WARM * BATCHES - 1
    assert max(abs(d - expected) for d in increments) < 1e-12


def test_warm_up_reaches_the_cosine_value_at_epoch_5():
    assert rate(WARM, 0) == pytest.approx(cosine(WARM), rel=1e-12)
    # the last warm-up batch is one increment short of it: no jump at the boundary
    increment = (cosine(WARM) - LR / 10) / (WARM * BATCHES)
    assert rate(WARM - 1, BATCHES - 1) == pytest.approx(cosine(WARM) - increment, rel=1e-12)


@pytest.mark.parametrize("epoch", [5, 37, 100, 150, 198])
def test_after_warm_up_rate_is_the_cosine_value_for_every_batch(epoch):
    assert rate(epoch, 0) == pytest.approx(cosine(epoch), rel=1e-12)
    assert rate(epoch, BATCHES - 1) == pytest.approx(cosine(epoch), rel=1e-12)


def test_middle_epoch_rate_is_halfway_between_lr_and_final():
    # with 201 epochs the middle epoch is 100 = (E-1)/2, where cos(pi/2) = 0
    assert rate(100, 7, epochs=201) == pytest.approx((LR + LR * FINAL) / 2, rel=1e-12)
    assert rate(100, 7) == pytest.approx(cosine(100), rel=1e-12)


def test_last_epoch_rate_is_lr_times_1e_minus_3():
    assert rate(EPOCHS - 1, 0) == pytest.approx(LR * 1e-3, rel=1e-9)
    assert rate(EPOCHS - 1, BATCHES - 1) == pytest.approx(LR * 1e-3, rel=1e-9)


def test_cosine_rate_decreases_monotonically_after_warm_up():
    rates = [rate(epoch, 0) for epoch in range(WARM, EPOCHS)]
    assert all(b < a for a, b in zip(rates, rates[1:]))


@pytest.mark.parametrize("epoch, expected", [(5, LR), (59, LR), (60, LR * 0.1), (119, LR * 0.1),
                                             (120, LR * 0.01), (160, LR * 0.001),
                                             (199, LR * 0.001)])
def test_step_decay_multiplies_by_rate_at_each_milestone(epoch, expected):
    value = rate(epoch, 3, final_factor=0.1, decay_epochs=[60, 120, 160])
    assert value == pytest.approx(expected, rel=1e-12)


def test_step_decay_warm_up_goes_from_lr_over_10_to_lr():
    decay = dict(final_factor=0.1, decay_epochs=[60, 120, 160])
    assert rate(0, 0, **decay) == pytest.approx(LR / 10, rel=1e-12)
    halfway = (WARM * BATCHES) // 2  # epoch 2, batch 50
    assert rate(2, 50, **decay) == pytest.approx(LR / 10 + (LR - LR / 10) * halfway / (WARM * BATCHES))
    assert rate(WARM, 0, **decay) == pytest.approx(LR, rel=1e-12)


def test_one_epoch_runs_at_lr_without_warm_up():
    values = [rate(0, batch, epochs=1) for batch in (0, 1, 50, 99)]
    assert values == pytest.approx([LR] * 4, rel=1e-12)


def test_zero_warm_epochs_starts_at_full_lr():
    assert rate(0, 0, warm_epochs=0) == pytest.approx(LR, rel=1e-12)
    assert rate(3, 10, warm_epochs=0) == pytest.approx(cosine(3), rel=1e-12)


def test_warm_up_is_clipped_to_the_epochs_before_the_last():
    # 4 epochs: warm-up over epochs 0..2, reaching cosine(3) = lr·1e-3 at the last epoch
    start, target = LR / 10, cosine(3, epochs=4)
    assert rate(0, 0, epochs=4) == pytest.approx(start, rel=1e-12)
    assert rate(1, 50, epochs=4) == pytest.approx(start + (target - start) * 150 / 300, rel=1e-12)
    assert rate(3, 0, epochs=4) == pytest.approx(LR * FINAL, rel=1e-9)
