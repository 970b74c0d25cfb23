"""What the learned tables say, read once (custom_runs/metrics.py): the run's results-file
summary and the density figures (custom_reports/learned.py) agree on a made-up split of
ten DIGITS images, with hand-set tables, on the noisy labels, the loss weights, the soft
labels' corrections, the augmentation of the rare classes and which classes are rare."""
import math

import pytest
import torch

from custom_common.settings import get_settings
from custom_datasets.split import Split
from custom_models.hyper_models import AugmentModel, LossModel
from custom_reports import learned
from custom_runs.metrics import learned_summary, train_truth

SETTINGS = get_settings("DIGITS")  # 10 classes: 5-9 are the rare ones (docs/design.md §2)
OFFICIAL = torch.tensor([0, 1, 2, 3, 5, 6, 7, 8, 9, 4])
TRAIN = torch.arange(9)  # image 9 is the valid image: its table rows must never count
STORED = OFFICIAL.clone()
STORED[1] = 7  # noisy
STORED[5] = 6  # drawn to its own class: not noise
STORED[6] = 0  # noisy
SPLIT = Split(torch.tensor([9]), TRAIN, STORED)
NOISY = [False, True, False, False, False, False, True, False, False]
RARE = [False, False, False, False, True, True, True, True, True]


def loss_model() -> LossModel:
    model = LossModel(10, 10, "BOTH", STORED, distorted=True)
    model.weight_logits.zero_()
    model.weight_logits[[1, 6]] = -2.0  # the noisy labels: weight softplus(-2)/ln 2 = 0.18
    model.weight_logits[3] = -3.0  # one clean label weighted below both noisy ones
    model.weight_logits[9] = -9.0
    model.soft_logits.zero_()
    model.soft_logits[1, 1] = 5.0  # corrected to its official class
    model.soft_logits[6, 0] = 5.0  # still its given (noisy) label
    return model


def augment_model(mode: str) -> AugmentModel:
    model = AugmentModel(10, mode)
    model.magnitude_logits.zero_()
    if mode == "SHA":
        model.probability_logits.fill_(math.log(0.25))  # sigmoid: 0.2
    else:
        model.probability_logits.zero_()  # sigmoid: 0.5
        model.probability_logits[torch.tensor(RARE + [False])] = math.log(3.0)  # sigmoid: 0.75
        model.probability_logits[9] = 9.0
    return model


def test_rare_classes_are_the_settings_upper_half_and_noise_a_changed_label():
    assert list(SETTINGS.upper_classes) == [5, 6, 7, 8, 9]
    truth = train_truth(TRAIN, STORED, OFFICIAL)
    assert truth.upper(SETTINGS.upper_classes).tolist() == RARE
    assert truth.noisy.tolist() == NOISY
    assert learned.noisy_train_mask(SPLIT.as_tuple(), OFFICIAL.numpy()).tolist() == NOISY


def test_results_summary_of_hand_set_tables():
    summary = learned_summary(loss_model(), augment_model("SEP"), SPLIT, OFFICIAL, SETTINGS)
    # 7 clean x 2 noisy pairs; image 3's weight is below both noisy ones: 12 of 14 ordered right
    assert summary["noisy_weight_auroc"] == pytest.approx(12 / 14)
    assert summary["soft_label_correction_rate"] == 0.5
    assert summary["aug_probability_lower"] == pytest.approx(0.5)
    assert summary["aug_probability_upper"] == pytest.approx(0.75)
    assert summary["aug_magnitude_lower"] == summary["aug_magnitude_upper"] == pytest.approx(0.5)
    shared = learned_summary(loss_model(), augment_model("SHA"), SPLIT, OFFICIAL, SETTINGS)
    assert shared["aug_probability_lower"] == shared["aug_probability_upper"] == pytest.approx(0.2)


def test_figures_read_the_same_numbers_as_the_results_summary():
    tables = loss_model().state_dict()
    split, official = SPLIT.as_tuple(), OFFICIAL.numpy()
    summary = learned_summary(loss_model(), augment_model("SEP"), SPLIT, OFFICIAL, SETTINGS)
    weights = learned.weights_by_label_noise(tables, split, official)
    assert weights.auroc == summary["noisy_weight_auroc"]
    assert len(weights.groups["noisy label"]) == 2 and len(weights.groups["clean label"]) == 7
    assert weights.means()["noisy label"] == pytest.approx(math.log1p(math.exp(-2)) / math.log(2))
    soft = learned.soft_label_confidence(tables, split, official)
    assert soft.extra["correction_rate"] == summary["soft_label_correction_rate"]
    probability, magnitude = learned.augmentation_by_class_group(
        augment_model("SEP").state_dict(), split, official, SETTINGS.upper_classes)
    assert len(probability.groups["upper (rare) classes"]) == 5
    assert probability.means() == {"upper (rare) classes": pytest.approx(summary["aug_probability_upper"]),
                                   "lower classes": pytest.approx(summary["aug_probability_lower"])}
    assert magnitude.means()["lower classes"] == pytest.approx(summary["aug_magnitude_lower"])
    by_class = learned.weights_by_class_group(tables, split, official, SETTINGS.upper_classes)
    assert len(by_class.groups["upper (rare) classes"]) == sum(RARE)
