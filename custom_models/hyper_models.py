"""Per-sample hyperparameter models (docs/design.md §3) and their optimiser.

Tables are indexed by the image's index in the full official train set. A
batch touches only its own rows, so tables live as buffers and a step gathers
the batch's rows as leaf tensors (`rows`), the hypergradient lands on those
leaves, and `RowRMSprop` updates just those rows: memory and time per step
grow with the batch, not with T (ImageNet's soft labels are 1.28 M x 1000).
"""
import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from custom_transforms import affine
from custom_transforms.augment_models import AUGMENT_MODELS, LEARNED_AUGMENT_MODELS

LOSS_MODELS = ("NONE", "WGHT", "SOFT", "BOTH")
SOFT_LABEL_EPSILON = 0.05
INITIAL_PROBABILITY = 1.0 / (affine.NUM_PARAMETERS - 2)  # 0.2
INITIAL_MAGNITUDE = 5 / 10  # M = 5 of 10


class LossModel(nn.Module):
    """Per-sample loss weights and soft labels (docs/design.md §3.1)."""

    def __init__(self, num_train: int, num_classes: int, mode: str, train_targets: torch.Tensor,
                 distorted: bool, device=None):
        super().__init__()
        if mode not in LOSS_MODELS:
            raise ValueError(f"unknown loss model '{mode}'; choose one of {', '.join(LOSS_MODELS)}")
        self.mode, self.num_classes, self.distorted = mode, num_classes, distorted
        self.learn_weights = mode in ("WGHT", "BOTH")
        self.learn_soft_labels = mode in ("SOFT", "BOTH")
        # d = ln(1 - C + C/eps) makes softmax(d (onehot - 1/2)) a label-smoothed one-hot
        scale = math.log(1 - num_classes + num_classes / SOFT_LABEL_EPSILON)
        # written in place on the device: ImageNet's table alone is 1.28 M x 1000 floats
        soft_logits = torch.full((num_train, num_classes), -scale / 2, device=device)
        if soft_logits.device.type != "meta":
            soft_logits.scatter_(1, train_targets.long().to(soft_logits.device)[:, None], scale / 2)
        self.register_buffer("weight_logits", torch.zeros(num_train, device=device))
        self.register_buffer("soft_logits", soft_logits)

    def learned_tables(self) -> Dict[str, torch.Tensor]:
        tables = {}
        if self.learn_weights:
            tables["weight_logits"] = self.weight_logits
        if self.learn_soft_labels:
            tables["soft_logits"] = self.soft_logits
        return tables

    def rows(self, indices: torch.Tensor, requires_grad: bool = False) -> Dict[str, torch.Tensor]:
        """The batch's rows; the learned ones as leaves that collect the hypergradient."""
        learned = self.learned_tables() if requires_grad else {}
        return {name: table[indices].detach().requires_grad_(name in learned)
                for name, table in (("weight_logits", self.weight_logits),
                                    ("soft_logits", self.soft_logits))}

    @staticmethod
    def weights(weight_logits: torch.Tensor) -> torch.Tensor:
        """The loss weights w of weight logits (WGHT, BOTH)."""
        return F.softplus(weight_logits) / math.log(2.0)  # exactly 1 at initialisation

    @staticmethod
    def soft_labels(soft_logits: torch.Tensor) -> torch.Tensor:
        """The soft labels q (class probabilities) of soft-label logits (SOFT, BOTH)."""
        return F.softmax(soft_logits, -1)

    def train_loss(self, logits: torch.Tensor, rows: Dict[str, torch.Tensor],
                   reduce: bool = True) -> torch.Tensor:
        weight = self.weights(rows["weight_logits"])
        soft_logits = rows["soft_logits"]
        logits = logits.float()
        if self.learn_soft_labels:
            log_q = F.log_softmax(soft_logits, -1)  # the soft label
            log_p = F.log_softmax(logits, -1)
            kl_q_p = (log_q.exp() * (log_q - log_p)).sum(-1)
            if self.distorted:
                kl_p_q = (log_p.exp() * (log_p - log_q)).sum(-1)
                divergence = 0.5 * (kl_q_p + kl_p_q)
            else:
                divergence = kl_q_p
            per_sample = weight * divergence
        else:
            per_sample = weight * F.cross_entropy(logits, soft_logits.argmax(-1), reduction="none")
        return per_sample.mean() if reduce else per_sample


class AugmentModel(nn.Module):
    """Shared (SHA, one row) or per-sample (SEP, T rows) augmentation logits (docs/design.md §3.2);
    which of the two a name is, the table of custom_transforms.augment_models says."""

    def __init__(self, num_train: int, mode: str, device=None):
        super().__init__()
        if mode not in LEARNED_AUGMENT_MODELS:
            raise ValueError(f"AugmentModel is for {' or '.join(LEARNED_AUGMENT_MODELS)}, not '{mode}'")
        self.mode = mode
        self.per_image = AUGMENT_MODELS[mode].learned == "separate"
        num_rows = num_train if self.per_image else 1
        shape = (num_rows, affine.NUM_PARAMETERS)
        probability = math.log(INITIAL_PROBABILITY / (1 - INITIAL_PROBABILITY))
        magnitude = math.log(INITIAL_MAGNITUDE / (1 - INITIAL_MAGNITUDE))
        self.register_buffer("probability_logits", torch.full(shape, probability, device=device))
        self.register_buffer("magnitude_logits", torch.full(shape, magnitude, device=device))

    def row_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return indices if self.per_image else torch.zeros(1, dtype=torch.long, device=indices.device)

    def learned_tables(self) -> Dict[str, torch.Tensor]:
        return {"probability_logits": self.probability_logits,
                "magnitude_logits": self.magnitude_logits}

    def rows(self, indices: torch.Tensor, requires_grad: bool = False) -> Dict[str, torch.Tensor]:
        rows = self.row_indices(indices)
        return {name: table[rows].detach().requires_grad_(requires_grad)
                for name, table in self.learned_tables().items()}

    def augment(self, images: torch.Tensor, rows: Dict[str, torch.Tensor],
                resampling: affine.Resampling = affine.RELEASED) -> torch.Tensor:
        return affine.augment(images, rows["probability_logits"], rows["magnitude_logits"], resampling)


def table_bytes(num_train: int, num_classes: int, los_model: str, aug_model: str) -> dict:
    """Memory of the hyperparameter tables and of their optimiser state, in bytes, from
    the very tensors the models allocate (built on the meta device, so nothing is)."""
    loss_model = LossModel(num_train, num_classes, los_model, torch.zeros(0), True, device="meta")
    tables = dict(loss_model.learned_tables())
    if aug_model in LEARNED_AUGMENT_MODELS:
        tables.update(AugmentModel(num_train, aug_model, device="meta").learned_tables())
    optimizer = RowRMSprop(tables, lr=0.0)
    size = lambda tensors: sum(t.numel() * t.element_size() for t in tensors)  # noqa: E731
    return {"tables": size(tables.values()),
            "optimizer_state": size(optimizer.square_avg.values()) + size(optimizer.last_step.values())}


class RowRMSprop:
    """RMSprop over table rows, exactly equal to torch.optim.RMSprop on the dense tables.

    A dense step with a zero gradient leaves a row's value unchanged and only
    decays its running average (avg <- alpha * avg); we apply those decays
    lazily, alpha ** (steps missed), when the row is next touched.
    """

    def __init__(self, tables: Dict[str, torch.Tensor], lr: float, alpha: float = 0.99,
                 eps: float = 1e-8):
        self.tables, self.lr, self.alpha, self.eps = tables, lr, alpha, eps
        self.step_count = 0
        self.square_avg = {name: torch.zeros_like(t) for name, t in tables.items()}
        self.last_step = {name: torch.zeros(t.shape[0], dtype=torch.long, device=t.device)
                          for name, t in tables.items()}

    @torch.no_grad()
    def step(self, row_indices: Dict[str, torch.Tensor], grads: Dict[str, Optional[torch.Tensor]],
             finite: Optional[torch.Tensor] = None):
        """row_indices[name]: unique rows of table `name`; grads[name]: their gradients;
        finite: a boolean device tensor, False to skip the update (non-finite gradients)."""
        self.step_count += 1
        for name, grad in grads.items():
            if grad is None:
                continue
            if finite is not None:
                # a skipped step acts as a zero gradient, as a dense optimiser would see it,
                # and is decided on the device so the loop never waits for the host
                grad = torch.where(finite, grad, torch.zeros_like(grad))
            rows = row_indices[name]
            table, average = self.tables[name], self.square_avg[name]
            missed = (self.step_count - 1 - self.last_step[name][rows]).to(average.dtype)
            decay = self.alpha ** missed
            decay = decay.view(-1, *([1] * (average.dim() - 1)))
            row_average = average[rows] * decay * self.alpha + (1 - self.alpha) * grad * grad
            average[rows] = row_average
            table[rows] -= self.lr * grad / (row_average.sqrt() + self.eps)
            self.last_step[name][rows] = self.step_count

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "lr": self.lr, "square_avg": self.square_avg,
                "last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.step_count, self.lr = int(state["step_count"]), float(state["lr"])
        for name in self.tables:
            self.square_avg[name].copy_(state["square_avg"][name])
            self.last_step[name].copy_(state["last_step"][name])
