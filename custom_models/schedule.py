"""Learning-rate rule of docs/design.md §5, used for the network and (over the hyper
epochs) for the hyperparameters.

Cosine from lr at epoch 0 to lr * final_factor at the last epoch; during the
first `warm_epochs` a per-batch linear warm-up from lr/10 to the cosine value
at the end of the warm-up. With `decay_epochs` the cosine is replaced by
step decay: lr * decay_rate ** (number of milestones passed).
"""
import math
from typing import Optional, Sequence


def epoch_rate(base_lr: float, epoch: int, epochs: int, final_factor: float,
               decay_epochs: Optional[Sequence[int]] = None) -> float:
    if decay_epochs:
        return base_lr * final_factor ** sum(epoch >= milestone for milestone in decay_epochs)
    if epochs <= 1:
        return base_lr
    progress = min(epoch, epochs - 1) / (epochs - 1)
    low = base_lr * final_factor
    return low + (base_lr - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


def learning_rate(base_lr: float, epoch: int, batch: int, batches_per_epoch: int, epochs: int,
                  warm_epochs: int = 5, final_factor: float = 1e-3,
                  decay_epochs: Optional[Sequence[int]] = None) -> float:
    """The rate for batch `batch` (0-based) of epoch `epoch` (0-based)."""
    warm_epochs = min(warm_epochs, epochs - 1)
    if epoch < warm_epochs:
        start = base_lr / 10.0
        target = epoch_rate(base_lr, warm_epochs, epochs, final_factor, decay_epochs)
        progress = (epoch * batches_per_epoch + batch) / (warm_epochs * batches_per_epoch)
        return start + (target - start) * progress
    return epoch_rate(base_lr, epoch, epochs, final_factor, decay_epochs)


def hyper_learning_rate(base_lr: float, epoch: int, hyper_start: int, epochs: int, step: int,
                        steps_per_epoch: int, warm_epochs: int = 5, first_hyper_epoch: int = 1) -> float:
    """The hyperparameters' rate at hyper step `step` of epoch `epoch` (0-based, after
    `hyper_start`): the rule above over the epochs - hyper_start - 1 hyper epochs, with the
    first hyper epoch numbered `first_hyper_epoch`. The released code numbers it 1, so its
    warm-up is already a fifth done when the first hyper step runs and lasts one epoch less;
    the paper's text counts the hyper epochs from 0 (`--paper-text warmup`)."""
    hyper_epoch = epoch - hyper_start - 1 + first_hyper_epoch
    return learning_rate(base_lr, hyper_epoch, step, steps_per_epoch, epochs - hyper_start - 1,
                         warm_epochs, 1e-3)
