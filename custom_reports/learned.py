"""What AutoDO's tables learned, as groups of values to compare in a figure, measured
against the truth the split file lets us know (which labels were flipped, which classes
imbalance made rare): loss weights of clean vs noisy-labelled samples and of the rare vs
the frequent classes, the soft labels' confidence in the official vs the given label, and
the learned augmentation probability and magnitude of the rare vs the frequent classes."""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

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
    from custom_runs.metrics import roc_auc
    scores = torch.from_numpy(np.concatenate([first, second]).astype(np.float64))
    positive = torch.zeros(len(scores), dtype=torch.bool)
    positive[:len(first)] = True
    return roc_auc(scores, positive)


def _split_arrays(split) -> Tuple[np.ndarray, np.ndarray]:
    _, train_indices, train_targets = split
    return np.asarray(train_indices, dtype=np.int64), np.asarray(train_targets, dtype=np.int64)


def noisy_train_mask(split, official_targets: np.ndarray) -> np.ndarray:
    """Over train indices: True where the stored label differs from the official one
    (a flip to the same class is not noise)."""
    train, targets = _split_arrays(split)
    return targets[train] != np.asarray(official_targets)[train]


def loss_weights(reweight_state: dict) -> np.ndarray:
    from custom_models.hyper_models import LossModel
    return LossModel.weights(reweight_state["weight_logits"].float()).numpy()


def weights_by_label_noise(reweight_state: dict, split, official_targets) -> GroupedValues:
    train, _ = _split_arrays(split)
    weights = loss_weights(reweight_state)[train]
    noisy = noisy_train_mask(split, official_targets)
    clean_values, noisy_values = weights[~noisy], weights[noisy]
    return GroupedValues("Loss weight: clean vs noisy labels", "loss weight softplus(w) / ln 2",
                         {"clean label": clean_values, "noisy label": noisy_values},
                         _auroc(clean_values, noisy_values), initial=1.0)


def weights_by_class_group(reweight_state: dict, split, official_targets, upper_classes) -> GroupedValues:
    train, _ = _split_arrays(split)
    weights = loss_weights(reweight_state)[train]
    upper = np.isin(np.asarray(official_targets)[train], list(upper_classes))
    return GroupedValues("Loss weight: rare vs frequent classes", "loss weight softplus(w) / ln 2",
                         {"upper (rare) classes": weights[upper], "lower classes": weights[~upper]},
                         _auroc(weights[upper], weights[~upper]), colours=CLASS_GROUP_COLOURS,
                         initial=1.0)


def soft_label_confidence(reweight_state: dict, split, official_targets) -> GroupedValues:
    """softmax(soft logits) at the official and at the given label, over noisy-labelled samples;
    extra["correction_rate"] is the share whose soft label's argmax is the official class."""
    train, targets = _split_arrays(split)
    noisy = noisy_train_mask(split, official_targets)
    rows = train[noisy]
    probabilities = torch.softmax(reweight_state["soft_logits"][torch.from_numpy(rows)].float(), -1).numpy()
    official = np.asarray(official_targets)[rows]
    given = targets[rows]
    at_official = probabilities[np.arange(len(rows)), official]
    at_given = probabilities[np.arange(len(rows)), given]
    corrected = float(np.mean(probabilities.argmax(1) == official)) if len(rows) else math.nan
    return GroupedValues("Soft labels of noisy-labelled samples", "soft-label probability",
                         {"official (true) label": at_official, "given (noisy) label": at_given},
                         _auroc(at_official, at_given), {"correction_rate": corrected})


def augmentation_by_class_group(augment_state: dict, split, official_targets,
                                upper_classes) -> List[GroupedValues]:
    """Per-sample (SEP) learned probability and magnitude, averaged over the 7 affine
    parameters, for the upper (rare) vs the lower classes."""
    from custom_models.hyper_models import INITIAL_MAGNITUDE, INITIAL_PROBABILITY
    train, _ = _split_arrays(split)
    upper = np.isin(np.asarray(official_targets)[train], list(upper_classes))
    out = []
    for key, title, xlabel, initial in (
            ("probability_logits", "Augmentation probability",
             "sigmoid(probability logit), mean over the 7 affine parameters", INITIAL_PROBABILITY),
            ("magnitude_logits", "Augmentation magnitude",
             "sigmoid(magnitude logit), mean over the 7 affine parameters", INITIAL_MAGNITUDE)):
        values = torch.sigmoid(augment_state[key].float()).mean(-1).numpy()[train]
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
    has_noise = bool(noisy_train_mask(split, official_targets).any())
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
