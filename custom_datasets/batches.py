"""Batches of (image, label, index) on the training device.

`DeviceBatches` keeps a whole dataset on the device as uint8 and slices
shuffled index batches out of it: no workers, no host-device copy per batch.
`FolderBatches` (ImageNet) reads with DataLoader workers and hands the same
(image, label, index) triples to the same device-side transforms.

Both take their batches from `EpochBatches`: the epoch's permutation comes from
a generator that every rank of a distributed run seeds alike, and each rank
keeps its shard of every global batch.
"""
import itertools
import math
from typing import Callable, Iterator, List, Optional, Tuple

import torch

from custom_common.collectives import SINGLE_PROCESS, Collectives

Batch = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class EpochBatches:
    """Batch sampler: positions 0..count-1, shuffled by `generator` (shared by the ranks,
    so all draw the same permutation), cut into global batches of `batch_size`, of which
    this rank yields its shard."""

    def __init__(self, count: int, batch_size: int, shuffle: bool, drop_last: bool,
                 generator: Optional[torch.Generator] = None,
                 collectives: Collectives = SINGLE_PROCESS):
        self.count, self.batch_size, self.shuffle = count, batch_size, shuffle
        # never drop the only batch; dropping a short last one keeps batch-norm statistics sane
        self.drop_last = drop_last and count >= batch_size
        self.generator = generator if generator is not None else torch.Generator()
        self.collectives = collectives

    def __len__(self) -> int:
        batches = self.count / self.batch_size
        return math.floor(batches) if self.drop_last else math.ceil(batches)

    def __iter__(self) -> Iterator[List[int]]:
        for positions in self.positions():
            yield positions.tolist()

    def positions(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(self.count, generator=self.generator) if self.shuffle \
            else torch.arange(self.count)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield self.collectives.shard(order[start:start + self.batch_size])


class DeviceBatches:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor,
                 batch_size: int, shuffle: bool, transform: Callable, drop_last: bool = False,
                 generator: Optional[torch.Generator] = None,
                 collectives: Collectives = SINGLE_PROCESS):
        """images, labels: the whole official set on the device, addressed by `indices`."""
        self.images, self.labels = images, labels
        self.indices = indices.to(images.device)
        self.batch_size, self.shuffle, self.transform = batch_size, shuffle, transform
        self.sampler = EpochBatches(len(indices), batch_size, shuffle, drop_last, generator,
                                    collectives)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Batch]:
        for positions in self.sampler.positions():
            index = self.indices[positions.to(self.indices.device)]
            yield self.transform(self.images[index]), self.labels[index], index


class FolderBatches:
    def __init__(self, dataset, labels: torch.Tensor, indices: torch.Tensor, batch_size: int,
                 shuffle: bool, transform: Callable, device: torch.device, workers: int,
                 drop_last: bool = False, generator: Optional[torch.Generator] = None,
                 collectives: Collectives = SINGLE_PROCESS):
        self.labels = labels.to(device)
        self.subset = torch.utils.data.Subset(dataset, indices.tolist())
        self.batch_size, self.transform, self.device = batch_size, transform, device
        self.sampler = EpochBatches(len(indices), batch_size, shuffle, drop_last, generator,
                                    collectives)
        self.loader = torch.utils.data.DataLoader(
            self.subset, batch_sampler=self.sampler, num_workers=workers,
            pin_memory=device.type == "cuda", persistent_workers=workers > 0)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        from custom_datasets.containers import UnreadableImage
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
