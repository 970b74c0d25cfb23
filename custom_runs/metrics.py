"""Measures of a run: what the hyperparameters learned (against the truth the split
file knows), minority-class accuracy. The one reading of the learned tables, shared by
the run's results file (learned_summary) and the figures (custom_reports/learned.py)."""
import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from custom_common.settings import DatasetSettings
from custom_datasets.split import Split
from custom_models.hyper_models import AugmentModel, LossModel


def roc_auc(scores: torch.Tensor, positive: torch.Tensor) -> Optional[float]:
    """P(score of a positive > score of a negative), ties counting half (Mann-Whitney), by
    sklearn.metrics.roc_auc_score. Where sklearn raises, the contract of the rank formula
    this replaced: None where one of the two groups is empty, NaN where a score is NaN (a
    diverged run's weights), and infinite scores ranked as any other."""
    positive = positive.bool().cpu()
    if not bool(positive.any()) or bool(positive.all()):
        return None
    scores = scores.double().cpu()
    if bool(scores.isnan().any()):
        return math.nan
    # the AUROC depends only on the scores' order, which their dense ranks keep, ties and +-inf included
    ranks = torch.unique(scores, return_inverse=True)[1]
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(positive.numpy(), ranks.numpy()))


@dataclass(frozen=True)
class TrainTruth:
    """What the split file lets us know about the train samples (docs/design.md §2), in the
    order of the split's train indices."""
    indices: torch.Tensor  # into the official train set, which indexes the learned tables
    given: torch.Tensor  # the labels trained on: noisy where the noise drew another class
    official: torch.Tensor

    @property
    def noisy(self) -> torch.Tensor:
        """True where the given label differs from the official one (a label the noise drew
        to its own class is not noise)."""
        return self.given != self.official

    def upper(self, upper_classes: Sequence[int]) -> torch.Tensor:
        """True for the samples of the upper classes, those imbalance makes rare: pass the
        settings' upper_classes (⌊C/2⌋ … C-1, docs/design.md §2), the one rule."""
        return torch.isin(self.official, torch.tensor(list(upper_classes), dtype=self.official.dtype))


def train_truth(train_indices, stored_targets, official_targets) -> TrainTruth:
    """The truth of a split (its train indices and stored targets, tensors or arrays) against
    the official train labels."""
    def on_cpu(labels) -> torch.Tensor:
        if isinstance(labels, torch.Tensor):
            return labels.to("cpu", torch.long)
        return torch.as_tensor(np.asarray(labels), dtype=torch.long)
    train = on_cpu(train_indices)
    return TrainTruth(train, on_cpu(stored_targets)[train], on_cpu(official_targets)[train])


def sample_weights(weight_logits: torch.Tensor, truth: TrainTruth) -> torch.Tensor:
    """The learned loss weight of each train sample (WGHT, BOTH)."""
    rows = truth.indices.to(weight_logits.device)
    return LossModel.weights(weight_logits[rows].float()).cpu()


def noisy_soft_logits(soft_logits: torch.Tensor, truth: TrainTruth) -> torch.Tensor:
    """The learned soft-label logits (SOFT, BOTH) of the noisy-labelled train samples."""
    rows = truth.indices[truth.noisy].to(soft_logits.device)
    return soft_logits[rows].float().cpu()


def correction_rate(noisy_logits: torch.Tensor, truth: TrainTruth) -> Optional[float]:
    """The share of noisy-labelled samples whose soft label's argmax is the official class
    (noisy_logits: noisy_soft_logits); None without noisy labels."""
    if not len(noisy_logits):
        return None
    return float((noisy_logits.argmax(-1) == truth.official[truth.noisy]).float().mean())


def augmentation_strength(logits: torch.Tensor, truth: TrainTruth) -> torch.Tensor:
    """sigmoid of a learned augmentation table (probability or magnitude logits), the mean
    over the affine parameters, for each train sample: SEP's table has a row per sample,
    SHA's one row that every sample shares."""
    shared = len(logits) == 1
    rows = torch.zeros(1, dtype=torch.long) if shared else truth.indices
    values = torch.sigmoid(logits[rows.to(logits.device)].float()).mean(-1).cpu()
    return values.expand(len(truth.indices)) if shared else values


def learned_summary(loss_model: LossModel, augment_model: Optional[AugmentModel], split: Split,
                    official_targets: torch.Tensor, settings: DatasetSettings) -> Dict:
    """What the hyperparameters learned, measured against the truth we know."""
    truth = train_truth(split.train_indices, split.train_targets, official_targets)
    summary = {"noisy_weight_auroc": None, "soft_label_correction_rate": None,
               "aug_probability_lower": None, "aug_probability_upper": None,
               "aug_magnitude_lower": None, "aug_magnitude_upper": None}
    if loss_model.learn_weights:
        # positive class = clean: a good model gives clean samples the larger weights
        summary["noisy_weight_auroc"] = roc_auc(sample_weights(loss_model.weight_logits, truth),
                                                ~truth.noisy)
    if loss_model.learn_soft_labels:
        summary["soft_label_correction_rate"] = correction_rate(
            noisy_soft_logits(loss_model.soft_logits, truth), truth)
    if augment_model is not None:
        upper = truth.upper(settings.upper_classes)
        for kind, table in (("probability", augment_model.probability_logits),
                            ("magnitude", augment_model.magnitude_logits)):
            values = augmentation_strength(table, truth)
            for group, mask in (("lower", ~upper), ("upper", upper)):
                if bool(mask.any()):
                    summary[f"aug_{kind}_{group}"] = float(values[mask].mean())
    return summary


def minority_accuracy(per_class_acc, settings: DatasetSettings) -> Optional[float]:
    """Mean accuracy of the upper-half classes that have test images (a class without any
    has None for its accuracy); None where none of them has."""
    measured = [per_class_acc[c] for c in settings.upper_classes if per_class_acc[c] is not None]
    return float(np.mean(measured)) if measured else None
