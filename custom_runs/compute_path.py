"""How a run computes on its device: the precision of the encoder, its memory format,
the test batch size and whether the encoder is compiled. Chosen once per
run, said in one line at the start and recorded in the results file.

bf16 autocast covers the encoder only; the hyperparameter tables, the classifier
head, the losses and the Neumann series stay in fp32 (custom_models.training.Network).
On the CPU it is used only where bf16 arithmetic is native (AMX tiles or AVX512-BF16
dot products): elsewhere oneDNN emulates it and it is slower than fp32.
"""
from dataclasses import asdict, dataclass
from typing import Dict, Optional

from custom_common.errors import UsageError

import torch

# The test pass has no backward, so its batch is limited by the caches, not by the
# optimiser: at 1024 images the first stage of the small ResNet-18 holds 51 MB of fp32
# activations per layer (16 x 28 x 28 floats an image), more than the 32 MB L3 of the
# CPUs measured, and a FashionMNIST test pass took 1.5-2.5x longer than at 64-256
# (fp32 and bf16, 2 threads). 128 is at the flat bottom of that curve for both.
CPU_TEST_BATCH_SIZE = 128
CUDA_TEST_BATCH_SIZE = 1024


def native_cpu_bf16() -> Optional[str]:
    """The CPU feature that makes bf16 arithmetic native, or None where it would be emulated."""
    probes = (("AMX", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"))
    for feature, probe in probes:
        supported = getattr(torch.cpu, probe, None)  # private probes: absent in some builds
        if supported is not None and supported():
            return feature
    return None


@dataclass(frozen=True)
class ComputePath:
    device: str                # "cpu" or "cuda"
    precision: str             # "bf16" (autocast of the encoder) or "fp32"
    reason: str                # why: the CPU feature, "CUDA", "no native bf16", "--no-amp"
    channels_last: bool
    test_batch_size: int
    fold_batch_norm: bool      # in the test pass and hyper epochs (Network.for_inference)
    compile: bool = False      # --compile: torch.compile the encoder and its folded copy

    @property
    def amp(self) -> bool:
        return self.precision == "bf16"

    def describe(self) -> str:
        precision = "bf16 autocast" if self.amp else "fp32"
        layout = ", channels-last" if self.channels_last else ""
        compiled = ", torch.compile" if self.compile else ""
        return (f"{self.device.upper()}: {precision} ({self.reason}){layout}, "
                f"test batch {self.test_batch_size}{compiled}")

    def record(self) -> Dict:
        """What the results file keeps (`compute_path`)."""
        return {**asdict(self), "description": self.describe()}


def cpp_compiler() -> Optional[str]:
    """The C++ compiler inductor builds its CPU kernels with (g++ or clang++, or $CXX), or None."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler  # private: absent in some builds
        return get_cpp_compiler()
    except Exception:  # noqa: BLE001 - inductor raises its own error types when none is found
        return None


def choose_compute_path(device: torch.device, no_amp: bool, compile: bool = False) -> ComputePath:
    """Raises UsageError for --compile on a CPU without a C++ compiler (said before any
    training, not as an inductor traceback at the first step)."""
    if device.type == "cuda":
        precision, reason = ("fp32", "--no-amp") if no_amp else ("bf16", "CUDA")
        return ComputePath("cuda", precision, reason, True, CUDA_TEST_BATCH_SIZE, False, compile)
    if compile and cpp_compiler() is None:
        raise UsageError("--compile on the CPU needs a C++ compiler (g++ or clang++, or one named "
                         "by $CXX) for torch.compile's kernels; install one or drop --compile")
    feature = native_cpu_bf16()
    if no_amp:
        precision, reason = "fp32", "--no-amp"
    elif feature is None:
        precision, reason = "fp32", "no native bf16"
    else:
        precision, reason = "bf16", feature
    # channels-last: oneDNN's convolutions run in NHWC natively; in NCHW it reorders
    # every layer's input and output (fp32 train step 15 % faster, test pass 1.3x)
    return ComputePath("cpu", precision, reason, True, CPU_TEST_BATCH_SIZE, True, compile)
