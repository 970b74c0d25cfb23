#!/usr/bin/env python3
"""Everything a GPU is needed to check and measure, as one command.

    make gpu-check                                 # = python bench/gpu_check.py
    python bench/gpu_check.py --dry-run            # the steps and their commands, on any machine
    python bench/gpu_check.py --out DIR --skip capacity-FashionMNIST

On one CUDA machine it runs, in this order, and then prints one summary table:

  cuda-tests               the tests that run on CUDA only (pytest -k cuda: their CUDA cases)
  throughput-fp32/-bf16/-bf16-compile
                           bench/throughput.py on the SVHN shape (random images of SVHN's
                           size, its default wide ResNet), with --no-amp / as chosen / --compile
  one-vs-torchrun          a short DIGITS run in one process and the same under a 1-rank
                           torchrun: their results files must hold the same numbers
  nccl-2-ranks             the same run on 2 ranks (NCCL), when 2 GPUs are there
  capacity-DIGITS, capacity-FashionMNIST
                           1, 2, 4 and 8 short runs at once on GPU 0 (what `run-table.py
                           --per-gpu K` does), and the total throughput each time

It reads no dataset and needs no network: DIGITS ships with scikit-learn, the SVHN-shaped
benchmark makes random images, and FashionMNIST is written as random images in its own
IDX files. It is sized to finish in under 8 minutes on one H100/H200. Every step's output
goes to a log under --out (default: a temporary folder), with the table as summary.md and
summary.json. Exit status: 0 when every step that ran passed, 1 when one failed, 2 on a
machine without CUDA (unless --dry-run).

On the device machine of this workplace (Python 3.12, torch and pytest there, kornia not),
kornia travels as wheels. Once, here, in the repository's root:

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \\
        --platform manylinux2014_x86_64 -d .whl kornia==0.9.0 kornia_rs==0.2.0

then run (carry: [".whl"], timeout_s 600):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; \\
        PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --out $OUT
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from bench.gpu_check_report import (capacity_figures, capacity_row, compared_numbers, largest_difference,
                                    last_json_line, pytest_counts, results_file, summary_table,
                                    throughput_figures, write_summary)

ROOT = Path(__file__).resolve().parents[1]

# the DIGITS configuration of `make run`'s AutoDO column (A_W_S: SEP + BOTH + HES), hyper
# steps from the second epoch
DIGITS_RUN = ["--dataset", "DIGITS", "-ir", "10", "-nr", "0.1", "--aug-model", "SEP",
              "--los-model", "BOTH", "--hyper-opt", "HES", "--hyper-start", "0"]
# the FashionMNIST setting of the CPU figures in docs/performance.md
FASHION_RUN = ["--dataset", "FashionMNIST", "-ir", "20", "-sr", "0.2", "-nr", "0.2",
               "--aug-model", "SEP", "--los-model", "BOTH", "--hyper-opt", "HES", "--hyper-start", "0"]
# the SVHN shape of the H100 figures in docs/performance.md (its default network, wresnet28_10)
SVHN_BENCH = ["--dataset", "SVHN", "--aug-model", "SEP", "--los-model", "BOTH", "--hyper-opt",
              "HES", "-ir", "100", "-nr", "0.1", "--steps", "30"]
CONCURRENT_RUNS = (1, 2, 4, 8)
CAPACITY_EPOCHS = {"DIGITS": 3, "FashionMNIST": 2}
FASHION_SIZES = {"train": 60000, "t10k": 10000}  # the files' image counts (custom_common.settings)
# numbers of the results files that a 1-rank torchrun must repeat; on CUDA they may differ
# in the last bits (atomic adds in another order), so a tolerance there
SAME_NUMBERS_TOLERANCE = {"cpu": 0.0, "cuda": 1e-3}


@dataclass
class Context:
    out: Path                   # logs, summary.md, summary.json
    work: Path                  # run folders and generated data
    python: str = sys.executable
    cuda: bool = True           # False: the CPU-runnable steps run with --no-cuda (tests)
    gpus: int = 1
    epochs: int = 2             # of the one-process / torchrun runs
    timeout: float = 300        # seconds a run of those may take


@dataclass
class Outcome:
    """What a step reports: one row of the summary table (or several, for capacity)."""
    status: str                 # "ok", "FAILED", "skipped"
    figures: str
    seconds: float = 0.0
    details: Dict = field(default_factory=dict)


@dataclass
class Step:
    name: str
    what: str
    commands: Callable[[Context], List[List[str]]]
    run: Callable[["Step", Context], Outcome]
    needs: Optional[Callable[[Context], Optional[str]]] = None  # the reason to skip, or None


# ----------------------------------------------------------------------------- running commands

def run_logged(command: Sequence[str], log: Path, timeout: float = 480, env=None) -> subprocess.CompletedProcess:
    """Runs a command from the repository's root, its output into `log` (appended)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log, "a") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        try:
            return subprocess.run(list(command), cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                  text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            handle.write(f"\n(stopped after {timeout:.0f} s)\n")
            return subprocess.CompletedProcess(list(command), 124)


def log_path(step: Step, context: Context) -> Path:
    return context.out / f"{step.name}.log"


# ----------------------------------------------------------------------------- cuda-tests

def cuda_tests_commands(context: Context) -> List[List[str]]:
    return [[context.python, "-m", "pytest", "tests", "-q", "-k", "cuda", "-p", "no:cacheprovider"]]


def run_cuda_tests(step: Step, context: Context) -> Outcome:
    log = log_path(step, context)
    finished = run_logged(step.commands(context)[0], log)
    counts = pytest_counts(log.read_text())
    figures = ", ".join(f"{count} {word}" for word, count in counts.items() if word != "deselected")
    ok = finished.returncode == 0 and counts.get("passed", 0) > 0
    return Outcome("ok" if ok else "FAILED", figures or f"exit status {finished.returncode}",
                   details=counts)


# ----------------------------------------------------------------------------- throughput

THROUGHPUT_VARIANTS = {"throughput-fp32": ["--no-amp"], "throughput-bf16": [],
                       "throughput-bf16-compile": ["--compile"]}


def throughput_step(name: str) -> Step:
    def commands(context):
        return [[context.python, "bench/throughput.py", *SVHN_BENCH, *THROUGHPUT_VARIANTS[name]]]

    def run(step, context):
        log = log_path(step, context)
        finished = run_logged(commands(context)[0], log)
        report = last_json_line(log.read_text())
        if finished.returncode != 0 or report is None:
            return Outcome("FAILED", f"exit status {finished.returncode}")
        return Outcome("ok", throughput_figures(report), details=report)
    return Step(name, f"SVHN shape, {name.split('-', 1)[1]}", commands, run)


# ----------------------------------------------------------------------------- one process vs torchrun

def short_run(context: Context, data: Path, processes: int = 0) -> List[str]:
    """The DIGITS run of the comparison: in one process (0) or under torchrun (ranks)."""
    flags = [*DIGITS_RUN, "--epochs", str(context.epochs), "-r", "run0", "--data", str(data)]
    if not context.cuda:
        flags.append("--no-cuda")
    if processes == 0:
        return [context.python, "implicit-augment.py", *flags]
    return [context.python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            str(processes), "implicit-augment.py", *flags]


def one_vs_torchrun_commands(context: Context) -> List[List[str]]:
    return [short_run(context, context.work / "one"), short_run(context, context.work / "torchrun", 1)]


def run_one_vs_torchrun(step: Step, context: Context) -> Outcome:
    log = log_path(step, context)
    # on the CPU (the tests): one thread a process, as the CPU runs of the test suite have
    threads = {} if context.cuda else {"OMP_NUM_THREADS": "1"}
    for command in step.commands(context):
        finished = run_logged(command, log, timeout=context.timeout, env=threads)
        if finished.returncode != 0:
            return Outcome("FAILED", f"exit status {finished.returncode} of {' '.join(command[1:4])}")
    one = json.loads(results_file(context.work / "one").read_text())
    launched = json.loads(results_file(context.work / "torchrun").read_text())
    difference, where = largest_difference(one, launched)
    tolerance = SAME_NUMBERS_TOLERANCE["cuda" if context.cuda else "cpu"]
    count = len(compared_numbers(one))
    if difference == 0:
        figures = f"the same {count} numbers (accuracies, losses, hypergradient norms, learned)"
    else:
        figures = f"{count} numbers, largest relative difference {difference:.2g} ({where})"
    return Outcome("ok" if difference <= tolerance else "FAILED", figures,
                   details={"largest_difference": difference, "where": where, "numbers": count})


# ----------------------------------------------------------------------------- 2 ranks, NCCL

def nccl_commands(context: Context) -> List[List[str]]:
    return [short_run(context, context.work / "nccl", 2)]


def nccl_needs(context: Context) -> Optional[str]:
    return None if context.gpus >= 2 else f"{context.gpus} GPU here, 2 needed"


def run_nccl(step: Step, context: Context) -> Outcome:
    log = log_path(step, context)
    finished = run_logged(step.commands(context)[0], log, timeout=context.timeout)
    if finished.returncode != 0:
        return Outcome("FAILED", f"exit status {finished.returncode}")
    two = json.loads(results_file(context.work / "nccl").read_text())
    one_path = context.work / "one"
    accuracy = f"final acc {two['final']['acc']:.2f} %"
    if one_path.is_dir():  # not bit-equal to one process (per-rank batch norm, other draws)
        one = json.loads(results_file(one_path).read_text())
        accuracy += f" (one process {one['final']['acc']:.2f} %)"
    ok = two["world_size"] == 2 and two["status"] == "finished"
    return Outcome("ok" if ok else "FAILED", f"2 ranks finished, {accuracy}", details=two["final"])


# ----------------------------------------------------------------------------- capacity

def write_fashion_mnist(root: Path, seed: int = 0) -> None:
    """Random images and labels in FashionMNIST's IDX files, as many as the real ones."""
    import numpy as np
    from struct import pack
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(seed)
    for split, count in FASHION_SIZES.items():
        images = generator.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = generator.integers(0, 10, count, dtype=np.uint8)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(pack(">HBB3I", 0, 8, 3, count, 28, 28) + images.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(pack(">HBBI", 0, 8, 1, count) + labels.tobytes())


def capacity_data(context: Context, dataset: str) -> Path:
    return context.work / f"capacity-{dataset}"


def capacity_commands(dataset: str):
    base = DIGITS_RUN if dataset == "DIGITS" else FASHION_RUN

    def commands(context: Context) -> List[List[str]]:
        """One command per run; the runs of each K start together (runK01 ... for K runs)."""
        listed = []
        for k in CONCURRENT_RUNS:
            for run in range(k):
                listed.append([context.python, "implicit-augment.py", *base,
                               "--epochs", str(CAPACITY_EPOCHS[dataset]), "-r", f"run{100 * k + run}",
                               "--data", str(capacity_data(context, dataset))]
                              + ([] if context.cuda else ["--no-cuda"]))
        return listed
    return commands


def capacity_step(dataset: str) -> Step:
    commands = capacity_commands(dataset)

    def run(step, context):
        log = log_path(step, context)
        data = capacity_data(context, dataset)
        if dataset == "FashionMNIST":
            write_fashion_mnist(data)
        listed, rows, start = commands(context), [], 0
        for k in CONCURRENT_RUNS:
            group, start = listed[start:start + k], start + k
            logs = [log.with_name(f"{step.name}-{k}-{i}.log") for i in range(k)]
            started = time.perf_counter()
            processes = []
            for command, run_log in zip(group, logs):
                handle = open(run_log, "w")
                processes.append((subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                                   env={**os.environ, "PYTHONUNBUFFERED": "1"}), handle))
            codes = []
            for process, handle in processes:
                try:
                    codes.append(process.wait(timeout=300))
                except subprocess.TimeoutExpired:
                    process.kill()
                    codes.append(process.wait())
                handle.close()
            wall = time.perf_counter() - started
            with open(log, "a") as combined:
                for command, run_log, code in zip(group, logs, codes):
                    combined.write(f"$ {' '.join(command)}\n(exit status {code})\n{run_log.read_text()[-2000:]}\n")
                    run_log.unlink()
            if any(codes):
                return Outcome("FAILED", f"{k} at once: exit status {max(codes)}",
                               details={"rows": rows})
            results = [json.loads(results_file(data, dataset, f"run{100 * k + run}").read_text())
                       for run in range(k)]
            rows.append(capacity_row(k, wall, results))
        return Outcome("ok", capacity_figures(rows), details={"rows": rows})
    return Step(f"capacity-{dataset}", f"{dataset} runs at once on one GPU", commands, run)


# ----------------------------------------------------------------------------- the check

def all_steps() -> List[Step]:
    return [Step("cuda-tests", "the CUDA cases of the tests", cuda_tests_commands, run_cuda_tests),
            *[throughput_step(name) for name in THROUGHPUT_VARIANTS],
            Step("one-vs-torchrun", "one process = 1-rank torchrun", one_vs_torchrun_commands,
                 run_one_vs_torchrun),
            Step("nccl-2-ranks", "2 ranks, NCCL", nccl_commands, run_nccl, nccl_needs),
            capacity_step("DIGITS"), capacity_step("FashionMNIST")]


def dry_run_listing(steps: Sequence[Step], context: Context) -> str:
    lines = []
    for step in steps:
        lines.append(f"{step.name}: {step.what}" + (" (only with 2 GPUs)" if step.needs else ""))
        lines += [f"    {' '.join(command)}" for command in step.commands(context)]
    return "\n".join(lines)


def run_steps(steps: Sequence[Step], context: Context) -> List[tuple]:
    rows = []
    for step in steps:
        reason = step.needs(context) if step.needs else None
        if reason:
            rows.append((step.name, step.what, Outcome("skipped", reason)))
            continue
        print(f"gpu_check: {step.name} ...", flush=True)
        started = time.perf_counter()
        try:
            outcome = step.run(step, context)
        except (OSError, ValueError, KeyError) as error:  # a missing or unreadable results file
            outcome = Outcome("FAILED", f"{type(error).__name__}: {error}")
        outcome.seconds = time.perf_counter() - started
        print(f"gpu_check: {step.name} {outcome.status} in {outcome.seconds:.0f} s: {outcome.figures}",
              flush=True)
        rows.append((step.name, step.what, outcome))
    return rows


def get_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="list the steps and their commands")
    parser.add_argument("--out", type=Path, default=None,
                        help="logs, summary.md and summary.json go here (default: a temporary folder)")
    names = [step.name for step in all_steps()]
    parser.add_argument("--skip", nargs="+", default=[], choices=names, metavar="STEP",
                        help=f"leave these steps out, of: {', '.join(names)}")
    return parser.parse_args(argv)


def main(args) -> int:
    import torch
    cuda = torch.cuda.is_available()
    steps = [step for step in all_steps() if step.name not in args.skip]
    if not cuda and not args.dry_run:
        print("gpu_check.py: error: no CUDA device here (torch.cuda.is_available() is False); "
              "this check needs one (--dry-run lists its steps)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        out = args.out or Path(tempfile.mkdtemp(prefix="gpu_check_logs_"))
        context = Context(out=out, work=Path(work), gpus=torch.cuda.device_count() if cuda else 0)
        if args.dry_run:
            print(dry_run_listing(steps, context))
            if args.out is None:
                out.rmdir()
            return 0
        out.mkdir(parents=True, exist_ok=True)
        print(f"gpu_check: {torch.cuda.get_device_name(0)}, {context.gpus} GPU(s), torch "
              f"{torch.__version__}; logs in {out}", flush=True)
        rows = run_steps(steps, context)
    write_summary(rows, out)
    print(summary_table(rows))
    return 1 if any(outcome.status == "FAILED" for _, _, outcome in rows) else 0


if __name__ == "__main__":
    sys.exit(main(get_args()))
