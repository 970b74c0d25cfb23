"""Model selection on the clean validation split (docs/design.md §7): which epoch becomes best_valid."""
import pytest

from custom_common.settings import get_settings
from custom_runs import run_state


def selection(measurements):
    """best_valid after epochs of (valid acc, valid loss); the test accuracy is 10 x the epoch."""
    record = run_state.start_record(config={})
    settings = get_settings("DIGITS")
    chosen = []
    for epoch, (acc, loss) in enumerate(measurements):
        test = {"acc": 10.0 * epoch, "loss": 1.0, "per_class_acc": [10.0 * epoch] * 10}
        if run_state.update_best_valid(record, settings, epoch, test, {"acc": acc, "loss": loss}):
            chosen.append(epoch)
    return record.best_valid, chosen


@pytest.mark.parametrize("measurements, epoch", [
    ([(90.0, 0.5), (92.0, 0.6), (91.0, 0.1)], 1),  # highest accuracy, whatever its loss
    ([(92.0, 0.5), (92.0, 0.4), (91.0, 0.1)], 1),  # a tie goes to the lower loss
    ([(92.0, 0.4), (92.0, 0.4), (92.0, 0.5)], 0),  # then to the earlier epoch
])
def test_best_valid_is_the_highest_valid_accuracy_then_lower_loss_then_earlier_epoch(measurements, epoch):
    best_valid, _ = selection(measurements)
    assert best_valid["epoch"] == epoch
    assert (best_valid["valid_acc"], best_valid["valid_loss"]) == measurements[epoch]
    assert best_valid["acc"] == 10.0 * epoch  # the TEST accuracy of the chosen epoch
    assert best_valid["minority_acc"] == 10.0 * epoch


def test_only_a_new_best_valid_epoch_asks_for_its_checkpoint():
    _, chosen = selection([(90.0, 0.5), (89.0, 0.1), (90.0, 0.4), (95.0, 0.9), (95.0, 0.9)])
    assert chosen == [0, 2, 3]
