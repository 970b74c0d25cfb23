"""What AutoDO's tables learned, as groups of values to compare in a figure, measured
against the truth the split file lets us know (which labels were flipped, which classes
imbalance made rare): loss weights of clean vs noisy-labelled samples and of the rare vs
the frequent classes, the soft labels' confidence in the official vs the given label, and
the learned augmentation probability and magnitude of the rare vs the frequent classes.
The tables are read, and "noisy" and "rare" decided, by custom_runs/metrics.py, as for the
run's results file."""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from custom_models.hyper_models import INITIAL_MAGNITUDE, INITIAL_PROBABILITY, LossModel
from custom_runs.metrics import (TrainTruth, augmentation_strength, correction_rate, noisy_soft_logits,
                                 roc_auc, sample_weights, train_truth)

CLASS_GROUP_COLOURS = ("tab:orange", "tab:green")  # rare vs frequent; blue/red is clean vs noisy


@dataclass
class GroupedValues:
    """One learned quantity over train samples, split into two groups to compare."""
    title: str
    xlabel: str
    groups: Dict[str, np.ndarray]  # group name -> values
    # P(a value of the first group > a value of the second), ties half; None if a group is empty
    auroc: Optional[float] = None
    extra: Dict[str, float] = field(default_factory=dict)
    colours: Tuple[str, str] = ("tab:blue", "tab:red")
    initial: Optional[float] = None  # the value every sample starts from, drawn for reference

    def means(self) -> Dict[str, float]:
        return {name: float(np.mean(values)) if len(values) else math.nan
                for name, values in self.groups.items()}


def _auroc(first: np.ndarray, second: np.ndarray) -> Optional[float]:
    """Mann-Whitney AUROC of first vs second, as in the results file's noisy_weight_auroc."""
    scores = torch.from_numpy(np.concatenate([first, second]).astype(np.float64))
    positive = torch.zeros(len(scores), dtype=torch.bool)
    positive[:len(first)] = True
    return roc_auc(scores, positive)


def _truth(split, official_targets) -> TrainTruth:
    _, train_indices, stored_targets = split
    return train_truth(train_indices, stored_targets, official_targets)


def noisy_train_mask(split, official_targets: np.ndarray) -> np.ndarray:
    """Over train indices: True where the stored label differs from the official one
    (a flip to the same class is not noise)."""
    return _truth(split, official_targets).noisy.numpy()


def weights_by_label_noise(reweight_state: dict, split, official_targets) -> GroupedValues:
    truth = _truth(split, official_targets)
    weights = sample_weights(reweight_state["weight_logits"], truth).numpy()
    noisy = truth.noisy.numpy()
    clean_values, noisy_values = weights[~noisy], weights[noisy]
    return GroupedValues("Loss weight: clean vs noisy labels", "loss weight softplus(w) / ln 2",
                         {"clean label": clean_values, "noisy label": noisy_values},
                         _auroc(clean_values, noisy_values), initial=1.0)


def weights_by_class_group(reweight_state: dict, split, official_targets, upper_classes) -> GroupedValues:
    truth = _truth(split, official_targets)
    weights = sample_weights(reweight_state["weight_logits"], truth).numpy()
    upper = truth.upper(upper_classes).numpy()
    return GroupedValues("Loss weight: rare vs frequent classes", "loss weight softplus(w) / ln 2",
                         {"upper (rare) classes": weights[upper], "lower classes": weights[~upper]},
                         _auroc(weights[upper], weights[~upper]), colours=CLASS_GROUP_COLOURS,
                         initial=1.0)


def soft_label_confidence(reweight_state: dict, split, official_targets) -> GroupedValues:
    """softmax(soft logits) at the official and at the given label, over noisy-labelled samples;
    extra["correction_rate"] is the share whose soft label's argmax is the official class."""
    truth = _truth(split, official_targets)
    logits = noisy_soft_logits(reweight_state["soft_logits"], truth)
    probabilities = LossModel.soft_labels(logits).numpy()
    rows = np.arange(len(logits))
    at_official = probabilities[rows, truth.official[truth.noisy].numpy()]
    at_given = probabilities[rows, truth.given[truth.noisy].numpy()]
    corrected = correction_rate(logits, truth)
    return GroupedValues("Soft labels of noisy-labelled samples", "soft-label probability",
                         {"official (true) label": at_official, "given (noisy) label": at_given},
                         _auroc(at_official, at_given),
                         {"correction_rate": math.nan if corrected is None else corrected})


def augmentation_by_class_group(augment_state: dict, split, official_targets,
                                upper_classes) -> List[GroupedValues]:
    """Per-sample (SEP) learned probability and magnitude, averaged over the 7 affine
    parameters, for the upper (rare) vs the lower classes."""
    truth = _truth(split, official_targets)
    upper = truth.upper(upper_classes).numpy()
    out = []
    for key, title, xlabel, initial in (
            ("probability_logits", "Augmentation probability",
             "sigmoid(probability logit), mean over the 7 affine parameters", INITIAL_PROBABILITY),
            ("magnitude_logits", "Augmentation magnitude",
             "sigmoid(magnitude logit), mean over the 7 affine parameters", INITIAL_MAGNITUDE)):
        values = augmentation_strength(augment_state[key], truth).numpy()
        out.append(GroupedValues(f"{title}: rare vs frequent classes", xlabel,
                                 {"upper (rare) classes": values[upper], "lower classes": values[~upper]},
                                 _auroc(values[upper], values[~upper]), colours=CLASS_GROUP_COLOURS,
                                 initial=initial))
    return out


def shared_augmentation(augment_state: dict) -> Dict[str, Tuple[float, float]]:
    """SHA: the one learned (probability, magnitude) of each affine parameter."""
    from custom_transforms.affine import PARAMETERS
    probability = torch.sigmoid(augment_state["probability_logits"].float()).reshape(-1).tolist()
    magnitude = torch.sigmoid(augment_state["magnitude_logits"].float()).reshape(-1).tolist()
    return {name: (p, m) for name, p, m in zip(PARAMETERS, probability, magnitude)}


def learned_quantities(checkpoint: dict, los_model: str, aug_model: str, split, official_targets,
                       upper_classes, imbalanced: bool):
    """The densities worth drawing for one configuration, and (SHA) its shared table."""
    reweight, augment = checkpoint.get("reweight_state_dict", {}), checkpoint.get("augment_state_dict", {})
    has_noise = bool(_truth(split, official_targets).noisy.any())
    quantities: List[GroupedValues] = []
    if los_model in ("WGHT", "BOTH"):
        if has_noise:
            quantities.append(weights_by_label_noise(reweight, split, official_targets))
        if imbalanced or not has_noise:
            quantities.append(weights_by_class_group(reweight, split, official_targets, upper_classes))
    if los_model in ("SOFT", "BOTH") and has_noise:
        quantities.append(soft_label_confidence(reweight, split, official_targets))
    shared = None
    if aug_model == "SEP":
        quantities += augmentation_by_class_group(augment, split, official_targets, upper_classes)
    elif aug_model == "SHA":
        shared = shared_augmentation(augment)
    return quantities, shared
