"""Batches of (image, label, index) on the training device.

`DeviceBatches` keeps a whole dataset on the device as uint8 and slices
shuffled index batches out of it: no workers, no host-device copy per batch.
`FolderBatches` (ImageNet) reads with DataLoader workers and hands the same
(image, label, index) triples to the same device-side transforms.
"""
import itertools
import math
from typing import Callable, Iterator, Tuple

import torch

Batch = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class DeviceBatches:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor,
                 batch_size: int, shuffle: bool, transform: Callable, drop_last: bool = False):
        """images, labels: the whole official set on the device, addressed by `indices`."""
        self.images, self.labels = images, labels
        self.indices = indices.to(images.device)
        self.batch_size, self.shuffle, self.transform = batch_size, shuffle, transform
        # never drop the only batch; dropping a short last one keeps batch-norm statistics sane
        self.drop_last = drop_last and len(self.indices) >= batch_size

    def __len__(self) -> int:
        count = len(self.indices) / self.batch_size
        return math.floor(count) if self.drop_last else math.ceil(count)

    def __iter__(self) -> Iterator[Batch]:
        order = self.indices
        if self.shuffle:
            order = order[torch.randperm(len(order), device=order.device)]
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start:start + self.batch_size]
            yield self.transform(self.images[index]), self.labels[index], index


class FolderBatches:
    def __init__(self, dataset, labels: torch.Tensor, indices: torch.Tensor, batch_size: int,
                 shuffle: bool, transform: Callable, device: torch.device, workers: int,
                 drop_last: bool = False):
        self.labels = labels.to(device)
        self.subset = torch.utils.data.Subset(dataset, indices.tolist())
        self.batch_size, self.transform, self.device = batch_size, transform, device
        self.drop_last = drop_last and len(indices) >= batch_size
        self.loader = torch.utils.data.DataLoader(
            self.subset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
            pin_memory=device.type == "cuda", drop_last=self.drop_last,
            persistent_workers=workers > 0)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        from custom_datasets.sources import UnreadableImage
        try:
            yield from self._batches()
        except UnreadableImage as error:
            raise UnreadableImage.from_worker(error) from None

    def _batches(self) -> Iterator[Batch]:
        for images, _, index in self.loader:
            images = images.to(self.device, non_blocking=True)
            index = index.to(self.device, non_blocking=True)
            yield self.transform(images), self.labels[index], index


def cycle(batches) -> Iterator[Batch]:
    """Endless batches, reshuffled on every pass (the valid batches of hyper steps)."""
    return itertools.chain.from_iterable(iter(batches) for _ in itertools.count())
