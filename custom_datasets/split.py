"""The distorted-data protocol of docs/design.md §2: clean valid split, subsample,
class imbalance, label noise; one file per run folder shared by every configuration.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import torch

from custom_common import atomic_files


def number_text(value) -> str:
    """How the paper's file names print a ratio: Python's str of a float (1.0, 0.1)."""
    return str(float(value))


def split_file_name(imbalance_ratio: int, subsample_ratio: float, noise_ratio: float) -> str:
    return (f"data_ir_{int(imbalance_ratio)}_sr_{number_text(subsample_ratio)}"
            f"_nr_{number_text(noise_ratio)}.pt")


@dataclass(frozen=True)
class Split:
    valid_indices: torch.Tensor  # int64, indices into the official train set
    train_indices: torch.Tensor
    train_targets: torch.Tensor  # int64 (T,): noisy labels at train indices, official elsewhere

    def as_tuple(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.valid_indices, self.train_indices, self.train_targets


def valid_size_for(num_train: int, official_train: int, official_valid: int) -> int:
    """V of docs/design.md §5; a non-official train size (test files, partial copies) keeps V/T."""
    if num_train == official_train:
        return official_valid
    return max(1, round(num_train * official_valid / official_train))


def stratified_valid(targets: torch.Tensor, num_classes: int, valid_size: int,
                     generator: torch.Generator) -> torch.Tensor:
    """valid_size indices with class shares as in `targets` (largest-remainder rounding)."""
    counts = torch.bincount(targets, minlength=num_classes).double()
    quota = counts * valid_size / len(targets)
    take = quota.floor().long()
    remainder = valid_size - int(take.sum())
    if remainder > 0:
        take[torch.argsort(quota - take.double(), descending=True)[:remainder]] += 1
    chosen = []
    for label in range(num_classes):
        members = torch.nonzero(targets == label).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:int(take[label])]])
    return torch.sort(torch.cat(chosen)).values


def build_split(targets: torch.Tensor, num_classes: int, valid_size: int, imbalance_ratio: int,
                subsample_ratio: float, noise_ratio: float, seed: int,
                fixed_valid: Optional[torch.Tensor] = None) -> Split:
    """docs/design.md §2; raises ValueError if the setting leaves the train set or a class group empty.
    `fixed_valid`: the data's own clean valid set (a user's valid/ folder) instead of a draw."""
    generator = torch.Generator().manual_seed(seed)
    total = len(targets)
    if fixed_valid is None:
        valid = stratified_valid(targets, num_classes, valid_size, generator)
    else:
        valid = torch.sort(fixed_valid.long()).values
    in_pool = torch.ones(total, dtype=torch.bool)
    in_pool[valid] = False
    pool = torch.nonzero(in_pool).flatten()

    keep = round(subsample_ratio * len(pool))
    if keep < 1:
        raise ValueError(f"-sr {subsample_ratio} keeps no train image of the {len(pool)} in the pool; "
                         f"raise -sr")
    train = pool[torch.randperm(len(pool), generator=generator)[:keep]]

    if imbalance_ratio > 1:
        is_upper = targets[train] >= num_classes // 2
        lower, upper = train[~is_upper], train[is_upper]
        kept_upper = int(len(lower) / imbalance_ratio)
        if kept_upper < 1:
            raise ValueError(f"-ir {imbalance_ratio} leaves no image of the upper classes "
                             f"({len(lower)} lower-class train images / {imbalance_ratio} < 1); "
                             f"lower -ir or raise -sr")
        upper = upper[torch.randperm(len(upper), generator=generator)[:kept_upper]]
        train = torch.cat([lower, upper])
    train = torch.sort(train).values

    noisy = targets.clone()
    if noise_ratio > 0:
        flipped = train[torch.randperm(len(train), generator=generator)[:round(noise_ratio * len(train))]]
        # a uniform class, which may coincide with the true one, exactly as in the paper
        noisy[flipped] = torch.randint(0, num_classes, (len(flipped),), generator=generator)
    return Split(valid, train, noisy)


def check_split_feasible(targets: torch.Tensor, num_classes: int, valid_size: int,
                         imbalance_ratio: int, subsample_ratio: float) -> None:
    """Raises ValueError early, before any data is drawn, when the setting is expected to
    leave a class group (or the train set) empty; build_split checks the drawn split exactly."""
    pool_size = len(targets) - valid_size
    expected = round(subsample_ratio * pool_size)
    if expected < 1:
        raise ValueError(f"-sr {subsample_ratio} keeps no train image of the {pool_size} in the pool; "
                         f"raise -sr")
    if imbalance_ratio > 1:
        lower_share = float((targets < num_classes // 2).double().mean())
        expected_upper = int(expected * lower_share / imbalance_ratio)
        if expected_upper < 1:
            raise ValueError(f"-ir {imbalance_ratio} leaves no image of the upper classes "
                             f"(about {expected * lower_share:.0f} lower-class train images / "
                             f"{imbalance_ratio} < 1); lower -ir or raise -sr")


def load_or_create_split(folder: Path, targets: torch.Tensor, num_classes: int, valid_size: int,
                         imbalance_ratio: int, subsample_ratio: float, noise_ratio: float,
                         seed: int, fixed_valid: Optional[torch.Tensor] = None) -> Split:
    """The run's split file; created once (atomically), then loaded by every configuration."""
    path = Path(folder) / split_file_name(imbalance_ratio, subsample_ratio, noise_ratio)
    if not path.is_file():
        split = build_split(targets, num_classes, valid_size, imbalance_ratio, subsample_ratio,
                            noise_ratio, seed, fixed_valid)
        atomic_files.create_once(split.as_tuple(), path)
    loaded = atomic_files.load_torch(path)
    try:
        valid, train, noisy = loaded
        if len(noisy) != len(targets):
            raise ValueError(f"it holds {len(noisy)} labels, the dataset has {len(targets)}")
    except (TypeError, ValueError) as error:
        raise atomic_files.UnreadableFile(f"{path} is not a split file of this dataset ({error}); "
                                          f"move it away to create a new one") from None
    return Split(valid.long(), train.long(), noisy.long())


def made_with_seed(split: Split, targets: torch.Tensor, num_classes: int, valid_size: int,
                   imbalance_ratio: int, subsample_ratio: float, noise_ratio: float,
                   seed: int, fixed_valid: Optional[torch.Tensor] = None) -> bool:
    """Whether `split` is the one `seed` makes (False for a split file made with another
    seed, by another version, or by the paper's code). Rebuilding costs milliseconds."""
    expected = build_split(targets, num_classes, valid_size, imbalance_ratio, subsample_ratio,
                           noise_ratio, seed, fixed_valid)
    return all(torch.equal(mine, theirs) for mine, theirs in zip(split.as_tuple(), expected.as_tuple()))
