"""Fixed augmentation policies (docs/design.md §6): RandAugment variant, Fast AutoAugment, DADA
and the colour sub-policy used alongside the learned SHA/SEP models.

    augment = make_policy_augment(aug_model, settings)   # None for NONE
    images = augment(images)   # float32 (B, C, H, W) in [0, 1], on any device

Every image draws its own operations, application coins, signs and values from
torch's RNG on the batch's device, so torch.manual_seed reproduces a batch. An
augmentation is a sequence of steps; in each step every image has one operation
(or none) and its value. A step is applied by looping over the dozen operations,
not over images: each non-geometric operation runs once on the images that drew
it, and all geometric operations of the step share a single warp in which each
image carries its own pixel map.
"""
import itertools
import json
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from custom_common.settings import DatasetSettings
from custom_transforms.augment_models import augment_choice
from custom_transforms.ops import (BILINEAR_GREY_OPERATIONS, GEOMETRIC_OPERATIONS, OPERATIONS,
                                   resample_geometric)

POLICY_DIR = Path(__file__).resolve().parent / "policies"
POLICY_FILES = {"fast_autoaugment": POLICY_DIR / "fast_autoaugment.json",
                "dada": POLICY_DIR / "dada.json"}

# Operation ids are positions in this tuple. The geometric operations come last, in
# GEOMETRIC_OPERATIONS order, so that sorting a step by id gathers them in one range for a
# single warp, and id - first geometric id is the kind that affine_maps takes.
OPERATION_NAMES: Tuple[str, ...] = tuple(
    [name for name in OPERATIONS if not OPERATIONS[name].geometric] + list(GEOMETRIC_OPERATIONS))
_OPERATION_ID = {name: index for index, name in enumerate(OPERATION_NAMES)}
_IDENTITY_ID = _OPERATION_ID["Identity"]
_FIRST_GEOMETRIC_ID = _OPERATION_ID[GEOMETRIC_OPERATIONS[0]]

# (min, max) of each operation's value. RandAugment's geometric ranges start at 0 and get
# their sign from a coin; the searched policies' ranges are symmetric and get a coin too
# (Fast AutoAugment's random mirror), so level 0 and level 1 both mean the full magnitude.
RAND_RANGES: Dict[str, Tuple[float, float]] = {
    "Identity": (0.0, 0.0), "AutoContrast": (0.0, 0.0), "Equalize": (0.0, 0.0),
    "Invert": (0.0, 0.0), "Color": (0.1, 1.9), "Sharpness": (0.1, 1.9),
    "Rotate": (0.0, 30.0), "ShearX": (0.0, 0.3), "ShearY": (0.0, 0.3),
    "TranslateX": (0.0, 0.45), "TranslateY": (0.0, 0.45),
}
# The learned SHA/SEP models do the geometry; this sampler only adds colour.
COLOUR_RANGES: Dict[str, Tuple[float, float]] = {
    name: RAND_RANGES[name]
    for name in ("Identity", "AutoContrast", "Equalize", "Invert", "Color", "Sharpness")
}
POLICY_RANGES: Dict[str, Tuple[float, float]] = {
    "Identity": (0.0, 0.0), "AutoContrast": (0.0, 0.0), "Equalize": (0.0, 0.0),
    "Invert": (0.0, 0.0),
    "ShearX": (-0.3, 0.3), "ShearY": (-0.3, 0.3),
    "TranslateX": (-0.45, 0.45), "TranslateY": (-0.45, 0.45), "Rotate": (-30.0, 30.0),
    "Solarize": (0.0, 256.0), "Posterize": (4.0, 8.0),
    "Contrast": (0.1, 1.9), "Color": (0.1, 1.9), "Brightness": (0.1, 1.9), "Sharpness": (0.1, 1.9),
    "Cutout": (0.0, 0.2),
}

SubPolicy = List[Tuple[str, float, float]]  # [(operation, probability, level), ...]


def load_policy(family: str, name: str) -> List[SubPolicy]:
    """Sub-policies of policy `name` in `family` ('fast_autoaugment' or 'dada')."""
    with open(POLICY_FILES[family]) as policy_file:
        policies = json.load(policy_file)
    if name not in policies:
        raise ValueError(f"no policy '{name}' in {POLICY_FILES[family].name}; "
                         f"choose one of: {', '.join(policies)}")
    return [[(operation, float(probability), float(level)) for operation, probability, level in sub_policy]
            for sub_policy in policies[name]]


def _range_tables(ranges: Dict[str, Tuple[float, float]]) -> Dict[str, torch.Tensor]:
    """min and max - min of each operation's value, indexed by operation id. In double
    precision, as the released code's Python floats: the values are then the same numbers
    that it handed to PIL, which casts enhancement factors to float itself (ops._pil_blend),
    and a last bit of a factor can move a truncated level."""
    low = torch.zeros(len(OPERATION_NAMES), dtype=torch.float64)
    span = torch.zeros(len(OPERATION_NAMES), dtype=torch.float64)
    for name, (minimum, maximum) in ranges.items():
        low[_OPERATION_ID[name]], span[_OPERATION_ID[name]] = minimum, maximum - minimum
    return {"low": low, "span": span}


class _DeviceTables:
    """Small per-policy lookup tables, copied once to each device the policy meets."""

    def __init__(self, **tables: torch.Tensor):
        self._on_device = {torch.device("cpu"): tables}

    def on(self, device: torch.device) -> Dict[str, torch.Tensor]:
        if device not in self._on_device:
            cpu_tables = self._on_device[torch.device("cpu")]
            self._on_device[device] = {key: table.to(device) for key, table in cpu_tables.items()}
        return self._on_device[device]


def _signed_values(operation_ids: torch.Tensor, fractions: torch.Tensor,
                   tables: Dict[str, torch.Tensor]) -> torch.Tensor:
    """min + fraction * (max - min) of each image's operation, negated on a fair coin for
    geometric operations."""
    values = tables["low"][operation_ids] + fractions * tables["span"][operation_ids]
    flip = tables["is_geometric"][operation_ids] & (torch.rand_like(values) < 0.5)
    return torch.where(flip, -values, values)


def _geometric_flags() -> torch.Tensor:
    return torch.tensor([OPERATIONS[name].geometric for name in OPERATION_NAMES])


def _operations(bilinear_grey: bool) -> Dict:
    return BILINEAR_GREY_OPERATIONS if bilinear_grey else OPERATIONS


def apply_step_dense(images: torch.Tensor, operation_ids: torch.Tensor, values: torch.Tensor,
                     applied: torch.Tensor, possible: Sequence[int], low: torch.Tensor,
                     bilinear_grey: bool = False) -> torch.Tensor:
    """apply_step without a host read: every possible operation runs on the whole batch and
    torch.where keeps each image's own result. On a GPU a 256-image batch costs an operation
    a few microseconds of arithmetic, so this beats waiting for the group sizes; images that
    did not draw an operation get its lowest value there, so every computation stays in range.
    """
    effective_ids = torch.where(applied, operation_ids, torch.full_like(operation_ids, _IDENTITY_ID))
    result = images
    for op_id in possible:
        if op_id == _IDENTITY_ID or op_id >= _FIRST_GEOMETRIC_ID:
            continue
        drew = effective_ids == op_id
        op_values = torch.where(drew, values, low[op_id].expand_as(values))
        augmented = _operations(bilinear_grey)[OPERATION_NAMES[op_id]].apply(images, op_values)
        result = torch.where(drew[:, None, None, None], augmented, result)
    if any(op_id >= _FIRST_GEOMETRIC_ID for op_id in possible):
        geometric = effective_ids >= _FIRST_GEOMETRIC_ID
        kinds = (effective_ids - _FIRST_GEOMETRIC_ID).clamp(min=0)
        warped = resample_geometric(images, kinds, torch.where(geometric, values, torch.zeros_like(values)),
                                    bilinear_grey)
        result = torch.where(geometric[:, None, None, None], warped, result)
    images.copy_(result)
    return images


def apply_step(images: torch.Tensor, operation_ids: torch.Tensor, values: torch.Tensor,
               applied: torch.Tensor, bilinear_grey: bool = False) -> torch.Tensor:
    """In place: give image i operation `operation_ids[i]` at `values[i]` where `applied[i]`.

    One argsort by operation puts the images of each operation in a contiguous range of
    `order`, so every operation gets its images with one index_select and returns them
    with one index_copy_, and the counts cost one host read per step, not one per
    operation. Geometric operations have the last ids (see OPERATION_NAMES), so their
    images form one range and are resampled in a single warp. `bilinear_grey`: the
    operations of `--policy-variant bilinear-grey` (ops.BILINEAR_GREY_OPERATIONS).
    """
    effective_ids = torch.where(applied, operation_ids, torch.full_like(operation_ids, _IDENTITY_ID))
    order = torch.argsort(effective_ids)
    # scatter_add rather than bincount, which reads its maximum back from the device first
    counts = torch.zeros(len(OPERATION_NAMES), dtype=torch.long, device=images.device)
    counts = counts.scatter_add_(0, effective_ids, torch.ones_like(effective_ids)).tolist()
    ends = list(itertools.accumulate(counts))
    starts = [end - count for end, count in zip(ends, counts)]
    sorted_values = values[order]
    for op_id in range(_FIRST_GEOMETRIC_ID):
        if counts[op_id] == 0 or op_id == _IDENTITY_ID:
            continue
        chosen = order[starts[op_id]:ends[op_id]]
        augmented = _operations(bilinear_grey)[OPERATION_NAMES[op_id]].apply(
            images.index_select(0, chosen), sorted_values[starts[op_id]:ends[op_id]])
        images.index_copy_(0, chosen, augmented)
    geometric_start = starts[_FIRST_GEOMETRIC_ID]
    if ends[-1] > geometric_start:
        chosen = order[geometric_start:]
        kinds = effective_ids[chosen] - _FIRST_GEOMETRIC_ID
        images.index_copy_(0, chosen, resample_geometric(images.index_select(0, chosen), kinds,
                                                         sorted_values[geometric_start:], bilinear_grey))
    return images


def _apply_on_device(images, operation_ids, values, applied, possible, tables,
                     bilinear_grey: bool) -> torch.Tensor:
    """The grouped step on the CPU (least arithmetic), the sync-free one on a GPU."""
    if images.is_cuda:
        return apply_step_dense(images, operation_ids, values, applied, possible, tables["low"],
                                bilinear_grey)
    return apply_step(images, operation_ids, values, applied, bilinear_grey)


class RandAugment:
    """RandAugment variant of docs/design.md §6: `num_ops` operations per image, drawn uniformly
    with replacement from `ranges`, each at min + U(0, 1) * (magnitude / 30) * (max - min).

    With COLOUR_RANGES this is the colour sub-policy used with SHA/SEP. `bilinear_grey`:
    geometric operations and Cutout as `--policy-variant bilinear-grey` has them.
    """

    def __init__(self, num_ops: int, magnitude: float, ranges: Dict[str, Tuple[float, float]] = RAND_RANGES,
                 bilinear_grey: bool = False):
        unknown = set(ranges) - set(OPERATIONS)
        if unknown:
            raise ValueError(f"unknown operations: {sorted(unknown)}")
        self.num_ops = num_ops
        self.magnitude = magnitude
        self.bilinear_grey = bilinear_grey
        self.operation_names = tuple(ranges)
        self._possible = sorted(_OPERATION_ID[name] for name in ranges)
        self._tables = _DeviceTables(
            candidates=torch.tensor([_OPERATION_ID[name] for name in ranges]),
            is_geometric=_geometric_flags(), **_range_tables(ranges))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        tables = self._tables.on(images.device)
        batch = images.shape[0]
        with torch.no_grad():
            images = images.clone()
            for _ in range(self.num_ops):
                picks = torch.randint(len(self.operation_names), (batch,), device=images.device)
                operation_ids = tables["candidates"][picks]
                fractions = torch.rand(batch, device=images.device, dtype=torch.float64)
                fractions *= self.magnitude / 30.0
                values = _signed_values(operation_ids, fractions, tables)
                applied = torch.ones(batch, dtype=torch.bool, device=images.device)
                _apply_on_device(images, operation_ids, values, applied, self._possible, tables,
                                 self.bilinear_grey)
        return images

    def __repr__(self) -> str:
        return (f"RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude}, "
                f"operations={list(self.operation_names)})")


class SubPolicyAugment:
    """Fast AutoAugment / DADA: each image draws one sub-policy uniformly; each operation of
    it is applied with its probability at value min + level * (max - min) of POLICY_RANGES.

    Sub-policies of different lengths are padded with never-applied Identity steps.
    """

    def __init__(self, sub_policies: List[SubPolicy], clip_levels: bool = False, name: str = "policy",
                 bilinear_grey: bool = False):
        if not sub_policies:
            raise ValueError("a policy needs at least one sub-policy")
        unknown = {operation for sub_policy in sub_policies for operation, _, _ in sub_policy} - set(POLICY_RANGES)
        if unknown:
            raise ValueError(f"unknown operations in policy '{name}': {sorted(unknown)}")
        self.name = name
        self.bilinear_grey = bilinear_grey
        self.num_sub_policies = len(sub_policies)
        self._possible = sorted({_OPERATION_ID[operation] for sub_policy in sub_policies
                                 for operation, _, _ in sub_policy})
        steps = max(len(sub_policy) for sub_policy in sub_policies)
        operation_ids = torch.full((len(sub_policies), steps), _OPERATION_ID["Identity"])
        probabilities = torch.zeros(len(sub_policies), steps)
        levels = torch.zeros(len(sub_policies), steps, dtype=torch.float64)
        for row, sub_policy in enumerate(sub_policies):
            for step, (operation, probability, level) in enumerate(sub_policy):
                operation_ids[row, step] = _OPERATION_ID[operation]
                probabilities[row, step] = probability
                levels[row, step] = level
        if clip_levels:
            # docs/design.md §6 clips DADA levels to [0, 1]; Fast AutoAugment levels are used as stored.
            levels = levels.clamp(0.0, 1.0)
        # Stored step-major, so that a step's column is a view (indexing [rows, step] would
        # copy the step number to the device on every call).
        self._tables = _DeviceTables(
            operation_ids=operation_ids.t().contiguous(), probabilities=probabilities.t().contiguous(),
            levels=levels.t().contiguous(), is_geometric=_geometric_flags(), **_range_tables(POLICY_RANGES))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        tables = self._tables.on(images.device)
        batch = images.shape[0]
        with torch.no_grad():
            images = images.clone()
            rows = torch.randint(self.num_sub_policies, (batch,), device=images.device)
            for step in range(tables["operation_ids"].shape[0]):
                operation_ids = tables["operation_ids"][step][rows]
                applied = torch.rand(batch, device=images.device) < tables["probabilities"][step][rows]
                values = _signed_values(operation_ids, tables["levels"][step][rows], tables)
                _apply_on_device(images, operation_ids, values, applied, self._possible, tables,
                                 self.bilinear_grey)
        return images

    def __repr__(self) -> str:
        return f"SubPolicyAugment(name={self.name!r}, sub_policies={self.num_sub_policies})"


def make_policy_augment(aug_model: str, settings: DatasetSettings, bilinear_grey: bool = False
                        ) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """The fixed augmentation that `--aug-model` asks for on this dataset (the policy of its
    entry in custom_transforms.augment_models), or None for NONE; `bilinear_grey` for
    `--policy-variant bilinear-grey` (default: the released code's PIL defaults, nearest and
    black, and Cutout's (125, 123, 114)).

    AUTO/DADA on a dataset without a searched policy borrow the SVHN one and say so.
    """
    policy = augment_choice(aug_model).policy
    if policy is None:
        return None
    if policy == "rand":
        return RandAugment(settings.rand_n, settings.rand_m, RAND_RANGES, bilinear_grey)
    if policy == "colour":
        return RandAugment(settings.colour_n, settings.colour_m, COLOUR_RANGES, bilinear_grey)
    policy_name = {"fast_autoaugment": settings.autoaugment_policy, "dada": settings.dada_policy}[policy]
    if settings.policy_note:
        print(f"{settings.name} {aug_model}: {settings.policy_note}", file=sys.stderr)
    return SubPolicyAugment(load_policy(policy, policy_name), clip_levels=(policy == "dada"),
                            name=f"{policy}/{policy_name}", bilinear_grey=bilinear_grey)
