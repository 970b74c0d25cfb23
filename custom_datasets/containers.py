"""What the readers of custom_datasets hand on: the official train and test sets in memory
(InMemoryData) or on disk (FolderData), and the errors that say a dataset cannot be read."""
from dataclasses import dataclass
from typing import List, Optional

import torch


class DataUnavailable(RuntimeError):
    """The dataset's files are missing or unreadable; the message says what to put where."""


class UnreadableImage(DataUnavailable):
    """One image file of a folder dataset cannot be decoded; the message names it."""

    @classmethod
    def from_worker(cls, error: "UnreadableImage") -> "UnreadableImage":
        """The same error without what a DataLoader worker wraps around it (its traceback):
        the worker re-raises it in the main process with the original message as the last line,
        after the exception's qualified name."""
        last = str(error).strip().splitlines()[-1]
        return cls(last.split(f"{cls.__name__}: ", 1)[-1])


@dataclass
class InMemoryData:
    train_images: torch.Tensor  # uint8 (T, C, H, W), index = index in the official train set
    train_targets: torch.Tensor  # int64 (T,), official labels
    test_images: torch.Tensor
    test_targets: torch.Tensor
    # a user's folder (custom_datasets/folder.py): its own valid set, the image files, and
    # whether the test pass runs on valid/ for want of a test/ folder
    valid_indices: Optional[torch.Tensor] = None  # None: a stratified draw (docs/design.md §2)
    train_paths: Optional[List[str]] = None
    test_is_valid: bool = False

    @property
    def num_train(self) -> int:
        return len(self.train_targets)


@dataclass
class FolderData:
    """ImageNet: images stay on disk; `train`/`test` are ImageFolder datasets, and
    `train_plain` is the train set with the test transform (the clean valid split)."""
    train: "torch.utils.data.Dataset"
    train_plain: "torch.utils.data.Dataset"
    test: "torch.utils.data.Dataset"
    train_targets: torch.Tensor
    test_targets: torch.Tensor
    classes: List[str]  # class folder names, sorted; label i is classes[i] in train and test
    valid_indices: Optional[torch.Tensor] = None  # as in InMemoryData
    train_paths: Optional[List[str]] = None
    test_is_valid: bool = False

    @property
    def num_train(self) -> int:
        return len(self.train_targets)
