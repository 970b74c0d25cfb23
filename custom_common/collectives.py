"""The few collective operations the method needs when one run trains on several
processes (docs/design.md §4 across ranks): sums of Hessian-vector products and
gradients, the gathering of every rank's table rows, and the shard of a global
batch a rank works on. With one process every operation is the identity, so a
plain run takes exactly the same code path.
"""
from dataclasses import dataclass
from typing import Any, List

import torch


@dataclass(frozen=True)
class Collectives:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, global_batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch (shares differ by at most one);
        the ranks' shares in rank order are the global batch."""
        if self.world_size == 1:
            return global_batch
        return torch.tensor_split(global_batch, self.world_size)[self.rank]

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over the ranks, in place; returns the tensor."""
        if self.world_size > 1:
            torch.distributed.all_reduce(tensor)
        return tensor

    def mean_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            self.sum_(tensor).div_(self.world_size)
        return tensor

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """The ranks' tensors concatenated along dim 0 in rank order (lengths may differ)."""
        if self.world_size == 1:
            return tensor
        length = torch.tensor([tensor.shape[0]], device=tensor.device)
        lengths = [torch.zeros_like(length) for _ in range(self.world_size)]
        torch.distributed.all_gather(lengths, length)
        lengths = [int(n) for n in lengths]
        # all_gather wants equal shapes: pad to the longest share, then trim
        padded = tensor.new_zeros((max(lengths), *tensor.shape[1:]))
        padded[:tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, padded.contiguous())
        return torch.cat([part[:n] for part, n in zip(parts, lengths)])

    def gather_objects(self, value: Any) -> List[Any]:
        if self.world_size == 1:
            return [value]
        values: List[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(values, value)
        return values

    def from_main(self, value: Any) -> Any:
        """Rank 0's value on every rank (picklable objects)."""
        if self.world_size == 1:
            return value
        box = [value if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


SINGLE_PROCESS = Collectives()

