"""One run on several processes, launched by torchrun (as torchvision's reference
scripts do it): read torchrun's environment, start the process group (NCCL on
GPUs, gloo on the CPU), keep the console and the files to rank 0, and let an
error that rank 0 meets reach every rank.

Without torchrun's environment nothing starts and the run is one process; the
training code sees `SINGLE_PROCESS` (world size 1) and takes the same path.
"""
import builtins
import hashlib
import os
import pickle
from typing import TYPE_CHECKING, Callable, Dict

if TYPE_CHECKING:  # torch is imported where needed: argument errors must stay quick
    import torch

    from custom_common.collectives import Collectives

# set to 1 to compare the hyperparameter tables and the network of every rank at the end of
# each epoch (a debug and test mode: it copies every table to the host once per epoch)
CHECK_TABLES_VARIABLE = "CHECK_RANK_TABLES"


class TablesDiverged(RuntimeError):
    """The ranks of one run hold different tables or weights: a bug, never a user error."""


def peer_stopped(error: BaseException) -> bool:
    """The error a collective raises when another rank of the run died (gloo reports
    it as a plain RuntimeError)."""
    import torch.distributed as dist
    markers = ("Connection closed by peer", "Connection reset by peer", "NCCL communicator",
               "ProcessGroupNCCL", "ProcessGroupGloo")
    return isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and any(marker in str(error) for marker in markers))


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_main_process() -> bool:
    """Rank 0, or a plain process; readable before the process group starts (argument errors)."""
    return os.environ.get("RANK", "0") == "0"


def init_distributed_mode(args) -> "Collectives":
    """Start the process group when torchrun launched us. Each rank trains on its local GPU
    (args.gpu becomes LOCAL_RANK) or, with --no-cuda or without CUDA, on the CPU with gloo."""
    from custom_common.collectives import SINGLE_PROCESS, Collectives
    if not launched_by_torchrun():
        return SINGLE_PROCESS
    import torch
    import torch.distributed as dist
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    args.gpu = int(os.environ.get("LOCAL_RANK", 0))
    on_gpus = not args.no_cuda and torch.cuda.is_available()
    if on_gpus:
        torch.cuda.set_device(args.gpu)
        dist.init_process_group("nccl", device_id=torch.device("cuda", args.gpu))
    else:
        dist.init_process_group("gloo")
    if rank != 0:
        silence_print()
    return Collectives(rank, world_size)


def end_distributed_mode() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def silence_print() -> None:
    """Only rank 0 speaks: N copies of every note and error line help nobody.
    Tracebacks of real crashes still reach stderr (they do not go through print)."""
    builtin_print = builtins.print

    def print(*args, force: bool = False, **kwargs):
        if force:
            builtin_print(*args, **kwargs)
    builtins.print = print


def main_first(collectives: "Collectives", claim: Callable[[], None]) -> None:
    """Rank 0 runs claim() (checks, the lock, the split file) while the others wait; an
    error it raises is raised on every rank, so all stop with the same status. So is a
    stop (Ctrl-C, SIGTERM: a KeyboardInterrupt) that reaches rank 0 there: the others,
    which wait for rank 0, would otherwise wait until torchrun tears the group down."""
    error = None
    if collectives.is_main:
        try:
            claim()
        except (Exception, KeyboardInterrupt) as raised:
            error = raised
    shared = collectives.from_main(None if error is None else _picklable(error))
    if error is not None:
        raise error
    if shared is not None:
        raise shared


def _picklable(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(str(error))


def check_identical(collectives: "Collectives", tensors: Dict[str, "torch.Tensor"], when: str) -> None:
    """Raise TablesDiverged unless every rank holds bit-identical `tensors`."""
    import torch
    digests = {name: hashlib.sha256(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
               for name, tensor in tensors.items()}
    every_rank = collectives.gather_objects(digests)
    differing = sorted(name for name in digests if len({ranks[name] for ranks in every_rank}) > 1)
    if differing:
        raise TablesDiverged(f"{when}: {', '.join(differing)} differ across the {collectives.world_size} "
                             f"ranks (a bug: please report it with the command)")


def check_tables_requested() -> bool:
    return os.environ.get(CHECK_TABLES_VARIABLE, "") not in ("", "0")
