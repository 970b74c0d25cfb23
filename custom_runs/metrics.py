"""Measures of a run: what the hyperparameters learned (against the truth the split
file knows), minority-class accuracy. Shared by the training loop and the figures."""
import math
from typing import Dict, Optional

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


def learned_summary(loss_model: LossModel, augment_model: Optional[AugmentModel], split: Split,
                    official_targets: torch.Tensor, settings: DatasetSettings) -> Dict:
    """What the hyperparameters learned, measured against the truth we know."""
    train = split.train_indices
    given = split.train_targets[train]
    official = official_targets[train]
    noisy = (given != official)
    summary = {"noisy_weight_auroc": None, "soft_label_correction_rate": None,
               "aug_probability_lower": None, "aug_probability_upper": None,
               "aug_magnitude_lower": None, "aug_magnitude_upper": None}
    if loss_model.learn_weights:
        weights = LossModel.weights(loss_model.weight_logits[train.to(loss_model.weight_logits.device)])
        # positive class = clean: a good model gives clean samples the larger weights
        summary["noisy_weight_auroc"] = roc_auc(weights.cpu(), ~noisy)
    if loss_model.learn_soft_labels and bool(noisy.any()):
        soft = loss_model.soft_logits[train[noisy].to(loss_model.soft_logits.device)].argmax(-1).cpu()
        summary["soft_label_correction_rate"] = float((soft == official[noisy]).float().mean())
    if augment_model is not None:
        rows = augment_model.row_indices(train.to(augment_model.probability_logits.device))
        probability = torch.sigmoid(augment_model.probability_logits[rows]).mean(-1).cpu()
        magnitude = torch.sigmoid(augment_model.magnitude_logits[rows]).mean(-1).cpu()
        upper = official >= settings.num_classes // 2
        if augment_model.mode == "SHA":
            probability = probability.expand(len(train))
            magnitude = magnitude.expand(len(train))
        for group, mask in (("lower", ~upper), ("upper", upper)):
            if bool(mask.any()):
                summary[f"aug_probability_{group}"] = float(probability[mask].mean())
                summary[f"aug_magnitude_{group}"] = float(magnitude[mask].mean())
    return summary


def minority_accuracy(per_class_acc, settings: DatasetSettings) -> Optional[float]:
    """Mean accuracy of the upper-half classes that have test images (a class without any
    has None for its accuracy); None where none of them has."""
    measured = [per_class_acc[c] for c in settings.upper_classes if per_class_acc[c] is not None]
    return float(np.mean(measured)) if measured else None
