"""Learning-rate rule of DESIGN §5, used for the network and (over the hyper
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
