#!/usr/bin/env python3
"""Throughput of the training run against its arithmetic floor.

Times N train steps, N hyper steps (same batch size) and one test pass after
warm-up, with device synchronisation around each timed block, and projects the
full run. Each is the run's own code (custom_models.training): the train steps are
`train_one_epoch` over N batches, the hyper steps `hyper_epoch` over N batches (the
network in eval mode, its batch norms folded where the compute path folds them, the
encoder's weights frozen), the test pass `evaluate`. Takes the training script's own
flags, e.g.

    python bench/throughput.py --dataset SVHN --model wresnet16_4 --aug-model SEP \
        --los-model BOTH --hyper-opt HES --steps 10 --no-cuda

The last line printed is one JSON object. Images are random uint8 of the
dataset's shape unless --real-data is given (then the dataset's files are read).

--epoch times one whole epoch's phases instead (a full hyper epoch, a full training
epoch, a test pass, each exactly as a run does them) and prints one JSON line per
measurement; --compare runs the compute paths side by side, interleaved --repeats
times so that a busy machine slows them alike: the CPU's earlier path (fp32,
NCHW, test batch 1024, batch norm not folded), fp32 and bf16 autocast with this
device's layout, test batch and folding, and this device's chosen precision with
--compile. Each round then prints a line "path": "compile summary": the
one-off compile time (the compiled path's warm-up less the same precision's eager
warm-up), the speed-up of an epoch, the epochs that repay the compilation and both
paths' projected time for a run of --epochs. Inductor's cache is a fresh folder of
this process, so round 0 pays a cold compilation (a first run's), later rounds a warm
one (a later run's of the same network and shapes: inductor keeps its kernels in
/tmp/torchinductor_$USER between runs).

Under torchrun (`torchrun --nproc_per_node N bench/throughput.py ...`, not with
--epoch) every rank times its share of the same global batches; rank 0 reports
the images/s of each rank and of all together.
"""
import dataclasses
import itertools
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.throughput_run import build_run, synthetic_data
from custom_common.settings import get_settings
from custom_datasets.batches import cycle
from custom_models.hyper_models import table_bytes
from custom_models.training import evaluate, hyper_epoch, train_one_epoch
from custom_runs.compute_path import cpp_compiler, native_cpu_bf16
from custom_runs.distributed import end_distributed_mode, init_distributed_mode, launched_by_torchrun
from custom_common.errors import UsageError
from custom_runs.options import OneLineErrorParser, add_training_arguments, resolve
from custom_runs.run_state import seed_epoch
from custom_runs.run_values import RunModels, RunParts, RunPlan
from custom_runs.set_up import plan_run


def get_args(argv=None):
    parser = OneLineErrorParser(description=__doc__.split("\n\n")[0])
    add_training_arguments(parser)
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each kind (default: 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    parser.add_argument("--real-data", action="store_true", help="read the dataset's files")
    parser.add_argument("--profile", metavar="FILE", default=None,
                        help="write torch.profiler's table of one train and one hyper step to FILE")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="device peak for the floor (default: measured with a large matmul)")
    parser.add_argument("--epoch", action="store_true",
                        help="time one whole epoch's phases (hyper, train, test) instead of steps")
    parser.add_argument("--compare", action="store_true",
                        help="with --epoch: time the CPU's earlier path (fp32, NCHW, test batch "
                             "1024), fp32, bf16 and the chosen precision compiled side by side")
    parser.add_argument("--paths", nargs="+", choices=COMPARED_PATHS, default=list(COMPARED_PATHS),
                        metavar="PATH", help=f"with --compare: the paths to time, of "
                                             f"{', '.join(COMPARED_PATHS)} (default: all)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="with --epoch: rounds over the paths, interleaved (default: 1)")
    parser.add_argument("--epoch-fraction", type=float, default=1.0,
                        help="with --epoch: time this fraction of each phase's batches and scale "
                             "to the whole epoch (default: 1.0)")
    args = parser.parse_args(argv)
    try:
        args = resolve(args)
    except UsageError as error:
        parser.error(str(error))
    if args.dataset == "ImageNet":
        parser.error("ImageNet is read from disk by workers; benchmark an in-memory dataset")
    if args.compare and not args.epoch:
        parser.error("--compare needs --epoch")
    on_cpu = args.no_cuda or not torch.cuda.is_available()  # CUDA compiles with Triton
    if args.compare and "compiled" in args.paths and on_cpu and cpp_compiler() is None:
        parser.error("the compiled path needs a C++ compiler (g++ or clang++); install one or "
                     "leave it out with --paths before fp32 bf16")
    if args.epoch and launched_by_torchrun():
        parser.error("--epoch times one process: run it without torchrun")
    if not 0 < args.epoch_fraction <= 1:
        parser.error(f"--epoch-fraction must be in (0, 1], got {args.epoch_fraction}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.steps < 1 or args.warmup < 0:
        parser.error(f"--steps must be at least 1 and --warmup at least 0, "
                     f"got {args.steps} and {args.warmup}")
    args.force = True
    return args


def train_steps(args, models: RunModels, batches) -> None:
    """Train steps over `batches`, as a run's training epoch takes them."""
    train_one_epoch(models.network, models.hyper, batches, models.optimizer,
                    lambda batch: args.lr, log_interval=10 ** 9)


def hyper_steps(args, models: RunModels, train_batches, valid_batches, count: int) -> None:
    """`count` hyper steps on the first batches of `train_batches`: the run's own hyper epoch
    over them (with the folded copy of the encoder where the compute path folds, refreshed
    once, as each hyper epoch does), at the constant hyper learning rate --hyper-beta."""
    hyper_epoch(models.network, models.hyper, itertools.islice(train_batches, count),
                valid_batches, lambda step: args.hyper_beta)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, function):
    synchronize(device)
    started = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - started


def forward_flops(plan: RunPlan, models: RunModels) -> float:
    """FLOPs of one image through the encoder and classifier (multiply-add = 2)."""
    from torch.utils.flop_counter import FlopCounterMode
    settings = plan.settings
    images = torch.zeros(2, settings.channels, settings.image_size, settings.image_size,
                         device=plan.device)
    models.encoder.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        models.decoder(models.encoder(images))
    return counter.get_total_flops() / 2


def peak_flops(device) -> float:
    """A large matrix product in the training precision: what the device really sustains."""
    size, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    repeats = 10
    seconds = timed(device, lambda: [a @ b for _ in range(repeats)])
    return 2 * size ** 3 * repeats / seconds


def write_profile(path, device, train, hyper) -> None:
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    sections = []
    for name, function in (("train steps", train), ("hyper steps", hyper)):
        if function is None:
            continue
        with profile(activities=activities) as profiler:
            function()
            synchronize(device)
        sections.append(f"== {name}\n" + profiler.key_averages().table(sort_by=sort, row_limit=40))
    Path(path).write_text("\n\n".join(sections))


COMPARED_PATHS = ("before", "fp32", "bf16", "compiled")


def compared_paths(path, names=COMPARED_PATHS):
    """The paths --compare times: the CPU's earlier one, fp32 and bf16 as chosen now, and
    the precision this device chooses with --compile."""
    eager = dataclasses.replace(path, compile=False)
    fp32 = dataclasses.replace(eager, precision="fp32", reason="--no-amp")
    bf16_reason = "CUDA" if path.device == "cuda" else native_cpu_bf16() or "emulated"
    paths = {"before": dataclasses.replace(fp32, channels_last=path.device == "cuda",
                                           test_batch_size=1024, fold_batch_norm=False),
             "fp32": fp32, "bf16": dataclasses.replace(eager, precision="bf16", reason=bf16_reason),
             "compiled": dataclasses.replace(eager, compile=True)}
    return {name: paths[name] for name in COMPARED_PATHS if name in names}


def run_seconds(args, report) -> float:
    """A whole run of --epochs on a path, from one epoch's phases: hyper epochs only after
    --hyper-start, as a run has them."""
    hyper_epochs = max(0, args.epochs - args.hyper_start - 1) if "hyper_epoch_s" in report else 0
    return (args.epochs * (report["train_epoch_s"] + report["test_pass_s"])
            + hyper_epochs * report.get("hyper_epoch_s", 0.0))


def compile_summary(args, reports) -> dict:
    """What compiling costs and saves in one round of --compare: `reports` by path name,
    holding "compiled" and the eager path of its precision."""
    compiled = reports["compiled"]
    eager = reports[compiled["precision"]]
    compile_s = compiled["warmup_s"] - eager["warmup_s"]
    saved_per_epoch = eager["epoch_s"] - compiled["epoch_s"]
    eager_run, compiled_run = run_seconds(args, eager), run_seconds(args, compiled) + compile_s
    return {"repeat": compiled["repeat"], "path": "compile summary",
            "precision": compiled["precision"], "compile_s": compile_s,
            "speedup": {name: reports[name]["epoch_s"] / compiled["epoch_s"]
                        for name in ("fp32", "bf16") if name in reports},
            # never, where the compiled epoch is not faster
            "epochs_to_repay": compile_s / saved_per_epoch if saved_per_epoch > 0 else None,
            "epochs": args.epochs, "eager_run_s": eager_run, "compiled_run_s": compiled_run,
            "compiled_run_faster": compiled_run < eager_run}


def time_epoch(args, plan: RunPlan, parts: RunParts) -> dict:
    """Seconds of one hyper epoch, one training epoch and one test pass, as a run does them
    (after a few untimed steps of each, so that one-time kernel set-up is not counted), from
    the first --epoch-fraction of each phase's batches scaled to the whole phase.
    `*_cpu_s` is the process's CPU time: on a CPU shared with other work it moves less
    than the wall-clock time."""
    device, num_classes = plan.device, plan.settings.num_classes
    batches, models = parts.batches, parts.models
    network, hyper = models.network, models.hyper
    seed_epoch(args.seed, 0)

    def hyper_pass(count):
        hyper_steps(args, models, batches.hyper, cycle(batches.valid), count)

    def test_subset(indices):
        test = batches.test
        return type(test)(test.images, test.labels, indices, test.batch_size, False, test.transform)

    def part(count):  # batches timed of a phase of `count`, and the factor to the whole phase
        timed_count = max(1, round(args.epoch_fraction * count))
        return timed_count, count / timed_count

    def warm_up():  # every batch shape of the timed phases (a compiled path compiles them here)
        train_steps(args, models, itertools.islice(warm_batches, args.warmup))
        test_indices, test_batch = batches.test.indices, batches.test.batch_size
        tail = len(test_indices) % test_batch
        if len(test_indices) > test_batch and tail:  # a whole batch and the shorter last one
            test_indices = torch.cat([test_indices[:test_batch], test_indices[-tail:]])
        else:
            test_indices = test_indices[:test_batch]
        evaluate(network, test_subset(test_indices), num_classes)
        if hyper.optimizer is not None:
            hyper_pass(args.warmup)
    warm_batches = iter(cycle(batches.train))
    seconds = {"warmup_s": timed(device, warm_up)}
    train_count, train_scale = part(len(batches.train))
    # whole test batches (a fraction of them, or all with the last, shorter one)
    test_indices = batches.test.indices
    test_count = min(len(test_indices), part(len(batches.test))[0] * batches.test.batch_size)
    test_scale = len(test_indices) / test_count
    phases = {"train_epoch": (lambda: train_steps(args, models,
                                                  itertools.islice(warm_batches, train_count)),
                              train_scale),
              "test_pass": (lambda: evaluate(network, test_subset(test_indices[:test_count]), num_classes),
                            test_scale)}
    if hyper.optimizer is not None:
        full_hyper = len(batches.hyper) if not args.hyper_steps else \
            min(args.hyper_steps, len(batches.hyper))
        hyper_count, hyper_scale = part(full_hyper)
        phases = {"hyper_epoch": (lambda: hyper_pass(hyper_count), hyper_scale), **phases}
    for phase, (function, scale) in phases.items():
        cpu_started = time.process_time()
        seconds[f"{phase}_s"] = timed(device, function) * scale
        seconds[f"{phase}_cpu_s"] = (time.process_time() - cpu_started) * scale
    seconds["epoch_s"] = sum(seconds[f"{phase}_s"] for phase in phases)
    seconds["epoch_cpu_s"] = sum(seconds[f"{phase}_cpu_s"] for phase in phases)
    return seconds


def epoch_main(args) -> int:
    settings = get_settings(args.dataset)
    data = None if args.real_data else synthetic_data(settings)
    chosen = plan_run(args).compute_path
    paths = compared_paths(chosen, args.paths) if args.compare else {"chosen": chosen}
    if any(path.compile for path in paths.values()):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # round 0 compiles as a first run does
            return time_paths(args, data, paths)
    return time_paths(args, data, paths)


def time_paths(args, data, paths) -> int:
    for repeat in range(args.repeats):
        reports = {}
        for label, path in paths.items():
            plan, prepared, parts = build_run(args, data, path)
            report = {"repeat": repeat, "path": label, "compute_path": path.describe(),
                      "precision": path.precision,
                      "threads": torch.get_num_threads(), "dataset": args.dataset,
                      "model": args.model, "train_size": len(prepared.split.train_indices),
                      "batch_size": parts.batches.train.batch_size,
                      "hyper_batch_size": parts.batches.hyper.batch_size,
                      "test_batch_size": parts.batches.test.batch_size,
                      "epoch_fraction": args.epoch_fraction,
                      **time_epoch(args, plan, parts)}
            reports[label] = report
            print(json.dumps(report), flush=True)
        if "compiled" in reports and reports["compiled"]["precision"] in reports:
            print(json.dumps(compile_summary(args, reports)), flush=True)
    return 0


def main(args):
    if args.epoch:
        return epoch_main(args)
    collectives = init_distributed_mode(args)
    try:
        return steps_main(args, collectives)
    except UsageError as error:
        print(f"throughput.py: error: {error}", file=sys.stderr)  # rank 0 only
        return 2
    finally:
        end_distributed_mode()


def steps_main(args, collectives) -> int:
    settings = get_settings(args.dataset)
    plan, prepared, parts = build_run(args, None if args.real_data else synthetic_data(settings),
                                      collectives=collectives)
    device, models = plan.device, parts.models
    network, hyper = models.network, models.hyper
    seed_epoch(args.seed, 0, parts.permutations, collectives.rank)
    shared = {"generator": parts.permutations, "collectives": collectives}

    train_batches = parts.batches.train
    batch_size = train_batches.batch_size
    steps = args.steps

    def train_pass(count):
        train_steps(args, models, itertools.islice(cycle(train_batches), count))

    train_pass(args.warmup)
    train_seconds = timed(device, lambda: train_pass(steps)) / steps

    hyper_seconds = None
    if hyper.optimizer is not None:
        # hyper steps at the train batch size, so that the ratio compares like with like
        hyper_train = type(train_batches)(train_batches.images, train_batches.labels,
                                          train_batches.indices, batch_size, True,
                                          train_batches.transform, **shared)
        valid = cycle(parts.batches.valid)

        def hyper_pass(count):
            hyper_steps(args, models, cycle(hyper_train), valid, count)
        hyper_pass(args.warmup)
        hyper_seconds = timed(device, lambda: hyper_pass(steps)) / steps

    if args.profile:
        write_profile(args.profile, device, lambda: train_pass(2),
                      (lambda: hyper_pass(2)) if hyper_seconds is not None else None)

    # the test pass is timed on at most `steps` of its batches and scaled to the test set
    test_batches = parts.batches.test
    subset = test_batches.indices[:min(len(test_batches.indices), steps * test_batches.batch_size)]
    timed_test = type(test_batches)(test_batches.images, test_batches.labels, subset,
                                    test_batches.batch_size, False, test_batches.transform, **shared)
    evaluate(network, timed_test, settings.num_classes, collectives)
    test_seconds = timed(device, lambda: evaluate(network, timed_test, settings.num_classes,
                                                  collectives))
    test_seconds *= len(test_batches.indices) / len(subset)

    train_size = len(prepared.split.train_indices)
    test_size = len(prepared.data.test_targets)
    hyper_epochs = max(0, args.epochs - args.hyper_start - 1) if hyper.optimizer is not None else 0
    flops = forward_flops(plan, models)
    # train step = 3 forwards per image, hyper step = 4 (forward, backward, valid forward)
    total_flops = flops * (args.epochs * (3 * train_size + test_size) + hyper_epochs * 4 * train_size)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(device)
    floor = total_flops / peak
    train_batches_per_epoch = train_size // batch_size
    projected = args.epochs * (train_batches_per_epoch * train_seconds + test_seconds)
    if hyper_seconds is not None:
        projected += hyper_epochs * (train_size / batch_size) * hyper_seconds

    if device.type == "cuda":
        peak_memory = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        peak_memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    memory = table_bytes(prepared.data.num_train, settings.num_classes, args.los_model, args.aug_model)
    imagenet = get_settings("ImageNet")
    imagenet_memory = table_bytes(imagenet.train_size, imagenet.num_classes, args.los_model, args.aug_model)

    # a step is one global batch on all ranks together; each rank's share is its own
    world_size = collectives.world_size
    per_rank = collectives.gather_objects(
        {"train_images_per_s": batch_size / world_size / train_seconds,
         "hyper_images_per_s": batch_size / world_size / hyper_seconds if hyper_seconds else None})
    if not collectives.is_main:
        return 0
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dataset": args.dataset, "model": args.model, "batch_size": batch_size,
        "world_size": world_size,
        "train_images_per_s_per_rank": [rank["train_images_per_s"] for rank in per_rank],
        "hyper_images_per_s_per_rank": [rank["hyper_images_per_s"] for rank in per_rank],
        "compute_path": plan.compute_path.describe(), "amp": network.amp,
        "train_size": train_size, "epochs": args.epochs,
        "hyper_epochs": hyper_epochs,
        "train_step_s": train_seconds, "hyper_step_s": hyper_seconds, "test_pass_s": test_seconds,
        # all ranks together (one process: the same as its one rank)
        "train_images_per_s": sum(rank["train_images_per_s"] for rank in per_rank),
        "hyper_images_per_s": sum(rank["hyper_images_per_s"] for rank in per_rank)
        if hyper_seconds else None,
        "hyper_to_train_ratio": hyper_seconds / train_seconds if hyper_seconds else None,
        "forward_gflops_per_image": flops / 1e9, "device_peak_tflops": peak / 1e12,
        "peak_memory_mb": peak_memory,
        "hyper_tables_mb": memory["tables"] / 2 ** 20,
        "hyper_optimizer_state_mb": memory["optimizer_state"] / 2 ** 20,
        "imagenet_hyper_tables_mb": imagenet_memory["tables"] / 2 ** 20,
        "imagenet_hyper_optimizer_state_mb": imagenet_memory["optimizer_state"] / 2 ** 20,
        "floor_s": floor, "projected_200_epoch_s": projected,
        "projected_to_floor": projected / floor,
    }
    for key, value in report.items():
        if key not in ("device",):
            print(f"{key:28s} {value}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args()))
