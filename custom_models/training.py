"""One training epoch, one hyper epoch, one test pass (docs/design.md §4, §5).

Nothing here synchronises host and device per batch: losses are accumulated
as device tensors and read once per epoch.
"""
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from custom_common.collectives import SINGLE_PROCESS, Collectives
from custom_models.hyper_models import AugmentModel, LossModel, RowRMSprop
from custom_models.hypergradient import hypergradient
from custom_transforms import affine


@dataclass
class Network:
    encoder: nn.Module
    decoder: nn.Linear
    amp: bool = False  # bf16 autocast for the encoder (custom_runs.compute_path decides)
    fold_batch_norm: bool = False  # in passes that leave the network unchanged (see for_inference)
    # the DistributedDataParallel wrapper of Classifier(self) that training steps run through
    # on several ranks; hyper steps and tests use the unwrapped modules (no gradient sync)
    distributed: Optional[nn.Module] = None
    # torch.compile the encoder (for the train step) and its folded copy (for the passes of
    # for_inference); the classifier head, the losses and the Neumann series stay eager fp32
    compile: bool = False
    _folded: Optional["FoldedEncoder"] = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.compile:
            self.encoder = torch.compile(self.encoder, dynamic=False)

    def autocast(self):
        if self.amp:
            return torch.autocast(self.decoder.weight.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            features = self.encoder(images)
        return features.float()  # the head, the losses and the Neumann series stay in fp32

    def for_inference(self) -> "Network":
        """The network for the passes in eval mode that change no weight (the test pass, a
        hyper epoch), with each batch norm folded into the convolution before it. Without a
        compiler nothing fuses them, and on the CPU every batch norm is a memory pass of its
        own over the activations, forward and backward (a fifth of a test pass)."""
        if not self.fold_batch_norm:
            return self
        if self._folded is None:
            self._folded = FoldedEncoder(plain(self.encoder), self.compile)
        else:
            self._folded.refresh(plain(self.encoder))
        return Network(self._folded.forward_module, self.decoder, self.amp)

    def train_logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.distributed is not None:
            return self.distributed(images)
        return self.decoder(self.features(images))

    def train(self, mode: bool = True):
        self.encoder.train(mode)
        self.decoder.train(mode)

    def parameters(self):
        return list(self.encoder.parameters()) + list(self.decoder.parameters())


def plain(module: nn.Module) -> nn.Module:
    """The module a torch.compile wrapper runs (its weights, its state dict)."""
    return getattr(module, "_orig_mod", module)


class FoldedEncoder:
    """An encoder's copy with every batch norm folded into the convolution before it, kept
    from pass to pass: refresh() folds the encoder's current weights and statistics into the
    same tensors, so that a compiled copy is compiled once per run, not once per pass (a new
    module would be a new graph to compile), and no pass pays torch.fx's copy and trace of
    the encoder again. Its parameters need no gradient: its passes change no weight."""

    def __init__(self, encoder: nn.Module, compile: bool):
        from torch.fx import symbolic_trace
        from torch.fx.experimental.optimization import fuse
        self.module = fuse(encoder).requires_grad_(False)
        kept = dict(self.module.named_modules())
        modules = dict(encoder.named_modules())
        # (convolution, batch norm) by name: the batch norms fuse() folded are gone from its copy
        self.pairs = [(node.args[0].target, node.target) for node in symbolic_trace(encoder).graph.nodes
                      if node.op == "call_module" and node.target not in kept
                      and isinstance(modules[node.target], nn.modules.batchnorm._BatchNorm)]
        self.forward_module = torch.compile(self.module, dynamic=False) if compile else self.module

    @torch.no_grad()
    def refresh(self, encoder: nn.Module) -> None:
        from torch.nn.utils.fusion import fuse_conv_bn_weights
        current = encoder.state_dict()
        for name, tensor in self.module.state_dict().items():
            if name in current:  # a folded convolution's weight is overwritten below
                tensor.copy_(current[name])
        for conv_name, norm_name in self.pairs:
            conv, norm = encoder.get_submodule(conv_name), encoder.get_submodule(norm_name)
            weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean,
                                                norm.running_var, norm.eps, norm.weight, norm.bias)
            folded = self.module.get_submodule(conv_name)
            folded.weight.copy_(weight)
            folded.bias.copy_(bias)


class Classifier(nn.Module):
    """Encoder and classifier as one module, for DistributedDataParallel to wrap."""

    def __init__(self, network: Network):
        super().__init__()
        self.encoder, self.decoder, self.network = network.encoder, network.decoder, network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.network.features(images))  # features: the autocast region


def average_buffers(module: nn.Module, collectives: Collectives) -> None:
    """Batch-norm running statistics are kept per rank during an epoch (each from its own
    shards); their mean over the ranks is what hyper steps, tests and checkpoints use."""
    if collectives.world_size == 1:
        return
    with torch.no_grad():
        for buffer in module.buffers():
            if buffer.is_floating_point():
                collectives.mean_(buffer)


@dataclass
class HyperState:
    loss_model: LossModel
    augment_model: Optional[AugmentModel]
    optimizer: Optional[RowRMSprop]
    iterations: int = 5
    alpha: float = 0.01
    skipped_steps: int = 0
    resampling: affine.Resampling = affine.RELEASED
    # the released code sends every configuration's train images (and every hyper step's valid
    # images) through the identity x4 resample, so all methods carry the same artefacts; the
    # paper's text resamples only those of the learned augmentation (`--paper-text baselines`)
    resample_every_configuration: bool = True
    collectives: Collectives = SINGLE_PROCESS

    @property
    def resamples(self) -> bool:
        return self.augment_model is not None or self.resample_every_configuration


@dataclass
class HyperEpochStats:
    steps: int = 0
    skipped: int = 0
    g_norm_sq: float = 0.0
    v_norm_sq: float = 0.0
    g_dot_v: float = 0.0

    @property
    def divergence(self) -> float:
        return self.g_norm_sq + self.v_norm_sq - 2 * self.g_dot_v


@contextmanager
def frozen(module: nn.Module):
    """Parameters that need no gradient for a while: the hyper step back-propagates into
    the images and the hyperparameters only, and a compiled encoder would otherwise
    compute every weight gradient of its backward graph as well."""
    flags = [parameter.requires_grad for parameter in module.parameters()]
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(module.parameters(), flags):
            parameter.requires_grad_(flag)


def augmented(images, indices, hyper: HyperState, requires_grad=False):
    """Images after the learned augmentation (or the identity resample, or nothing) and the
    rows of the augmentation tables it used."""
    if hyper.augment_model is None:
        return (affine.resample(images, resampling=hyper.resampling) if hyper.resamples else images), {}
    rows = hyper.augment_model.rows(indices, requires_grad=requires_grad)
    return hyper.augment_model.augment(images, rows, hyper.resampling), rows


def train_one_epoch(network: Network, hyper: HyperState, batches, optimizer: torch.optim.Optimizer,
                    set_lr: Callable[[int], float], progress: Optional[Callable] = None,
                    log_interval: int = 100) -> torch.Tensor:
    """SGD on the network with the current (fixed) hyperparameters; returns the mean loss.

    A non-finite loss is detected on the device and reported once at the end of
    the epoch (raising FloatingPointError before anything is saved), so the loop
    never waits for the device."""
    network.train(True)
    total, count = torch.zeros((), device=network.decoder.weight.device), 0
    for batch, (images, _, indices) in enumerate(batches):
        set_lr(batch)
        with torch.no_grad():
            images, _ = augmented(images, indices, hyper)
        logits = network.train_logits(images)
        loss = hyper.loss_model.train_loss(logits, hyper.loss_model.rows(indices))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
        count += 1
        if progress is not None and count % log_interval == 0:
            progress(count, total / count)
    # the mean over the ranks, so that every rank sees the same loss and stops alike
    mean = hyper.collectives.mean_(total / max(count, 1))
    if not bool(torch.isfinite(mean)):
        raise FloatingPointError(f"the training loss became {float(mean)}")
    return mean


def global_count(count: int, device, collectives: Collectives) -> Union[float, torch.Tensor]:
    """Images in the global batch whose shards the ranks hold. One process gets a number:
    a tensor made from a host number would be a host-device synchronisation per step."""
    if collectives.world_size == 1:
        return float(count)
    return collectives.sum_(torch.tensor(float(count), device=device))


def valid_gradient(network: Network, images, labels, resample: bool,
                   resampling: affine.Resampling = affine.RELEASED,
                   collectives: Collectives = SINGLE_PROCESS) -> torch.Tensor:
    """v = ∂L_v/∂θ on a (global) batch with clean labels; `resample`: the images are resampled
    with the identity, so they carry the train images' artefacts."""
    with torch.no_grad():
        features = network.features(affine.resample(images, resampling=resampling) if resample else images)
    theta = network.decoder.weight
    loss = F.cross_entropy(F.linear(features, theta, network.decoder.bias), labels, reduction="sum")
    loss = loss / global_count(len(labels), theta.device, collectives)
    return collectives.sum_(torch.autograd.grad(loss, theta)[0])


def gather_rows(collectives: Collectives, rows: torch.Tensor, grads: torch.Tensor):
    """Every rank's (rows, gradients) of a table, duplicate rows summed (a shared row, SHA,
    gets a gradient from each rank): all ranks then take the same optimiser step."""
    if collectives.world_size == 1:
        return rows, grads
    rows, grads = collectives.gather(rows), collectives.gather(grads)
    unique, inverse = torch.unique(rows, return_inverse=True)
    summed = grads.new_zeros((len(unique), *grads.shape[1:])).index_add_(0, inverse, grads)
    return unique, summed


def hyper_step(network: Network, hyper: HyperState, train_batch, valid_batch):
    """One hypergradient step on the learned tables. Returns the Hypergradient and a
    boolean device tensor: False when it was non-finite and the step was skipped."""
    collectives = hyper.collectives
    valid_images, valid_labels, _ = valid_batch
    v = valid_gradient(network, valid_images, valid_labels, hyper.resamples, hyper.resampling,
                       collectives)

    images, _, indices = train_batch
    images, augment_rows = augmented(images, indices, hyper, requires_grad=True)
    loss_rows = hyper.loss_model.rows(indices, requires_grad=True)
    features = network.features(images)
    bias = network.decoder.bias.detach()
    # this rank's share of the global-batch mean (the plain mean on one process)
    count = global_count(len(indices), bias.device, collectives)

    def train_loss(theta):
        per_sample = hyper.loss_model.train_loss(F.linear(features, theta, bias), loss_rows,
                                                 reduce=False)
        return per_sample.sum() / count

    learned = {name: rows for name, rows in {**augment_rows, **loss_rows}.items() if rows.requires_grad}
    result = hypergradient(train_loss, v, network.decoder.weight, list(learned.values()),
                           hyper.iterations, hyper.alpha, collectives.sum_)
    row_indices = {name: indices for name in loss_rows}
    if hyper.augment_model is not None:
        row_indices.update({name: hyper.augment_model.row_indices(indices) for name in augment_rows})
    gathered = {name: gather_rows(collectives, row_indices[name], grad)
                for name, grad in zip(learned, result.grads) if grad is not None}
    # decided on the gathered gradients, so every rank skips (or takes) the same step
    finite = torch.stack([torch.isfinite(grad).all() for _, grad in gathered.values()]
                         + [torch.isfinite(result.g_dot_v)]).all()
    hyper.optimizer.step({name: rows for name, (rows, _) in gathered.items()},
                         {name: grad for name, (_, grad) in gathered.items()}, finite)
    return result, finite


def hyper_epoch(network: Network, hyper: HyperState, train_batches, valid_batches: Iterator,
                set_lr: Callable[[int], float], max_steps: int = 0) -> HyperEpochStats:
    """One pass of hyper steps over the train subset (network in eval mode)."""
    network.train(False)
    network = network.for_inference()
    stats = HyperEpochStats()
    # [steps taken, skipped, Σ‖g‖², Σ‖v‖², Σ<g,v>] accumulated on the device, read once
    sums = torch.zeros(5, device=network.decoder.weight.device)
    with frozen(network.encoder):
        for step, train_batch in enumerate(train_batches):
            if max_steps and step >= max_steps:
                break
            hyper.optimizer.lr = set_lr(step)
            result, finite = hyper_step(network, hyper, train_batch, next(valid_batches))
            ok = finite.float()
            values = torch.stack([result.g_norm_sq, result.v_norm_sq, result.g_dot_v]).float()
            sums += torch.cat([torch.stack([ok, 1 - ok]),
                               torch.where(finite, values, torch.zeros_like(values))])
    taken, skipped, g_norm_sq, v_norm_sq, g_dot_v = sums.tolist()
    stats.steps, stats.skipped = int(taken), int(skipped)
    stats.g_norm_sq, stats.v_norm_sq, stats.g_dot_v = (x / max(taken, 1) for x in (g_norm_sq, v_norm_sq, g_dot_v))
    hyper.skipped_steps += stats.skipped
    return stats


@torch.no_grad()
def evaluate(network: Network, batches, num_classes: int,
             collectives: Collectives = SINGLE_PROCESS) -> Dict:
    """Accuracy (%), mean loss and per-class accuracy (%) on plain images (each rank
    tests its shard of every batch; the sums are added over the ranks). A class with no
    test image has no accuracy (None), not 0 %."""
    network.train(False)
    network = network.for_inference()
    device = network.decoder.weight.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros(num_classes, device=device)
    seen = torch.zeros(num_classes, device=device)
    for images, labels, _ in batches:
        logits = network.decoder(network.features(images))
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        hits = (logits.argmax(-1) == labels).float()
        correct.index_add_(0, labels, hits)
        seen.index_add_(0, labels, torch.ones_like(hits))
    collectives.sum_(loss_sum), collectives.sum_(correct), collectives.sum_(seen)
    total = float(seen.sum())
    per_class = [100.0 * hits / count if count else None
                 for hits, count in zip(correct.tolist(), seen.tolist())]
    return {"acc": 100.0 * float(correct.sum()) / total, "loss": float(loss_sum) / total,
            "per_class_acc": per_class}
