"""A table of runs as data: configurations x IR-NR settings x run folders, each one
implicit-augment.py command (with --resume, so that every run is idempotent and safe to
start again after any interruption). run-table.py expands its options here and hands the
list to a launcher (local.py or slurm.py beside this module)."""
import argparse
import contextlib
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from custom_runs import run_files
from custom_runs.identity import IDENTITY_OPTIONS, Configuration, load_paper_results, paper_methods
from custom_common.errors import UsageError
from custom_runs.options import (add_training_arguments, at_least_one, check_all,
                                 dataset_settings, resolve, saved_option)

# run-table.py sets these itself for every run; given among the pass-through options they
# would contradict the table (a --gpu contradicts the launcher's placement, a --seed would
# make every run folder the same run)
SET_BY_THE_TABLE = {
    "run_folder": "-r (use --runs)",
    "imbalance_ratio": "-ir (use --settings)", "noise_ratio": "-nr (use --settings)",
    "aug_model": "--aug-model (use --configs)", "los_model": "--los-model (use --configs)",
    "hyper_opt": "--hyper-opt (use --configs)", "resume": "--resume (every run resumes)",
    "force": "--force (delete the run's files instead)", "gpu": "--gpu (use --gpus)",
    "seed": "--seed (runs differ by their folder's seed)",
}

# settings for datasets the paper has no table of: the CIFAR grid (IR 1/10, NR 0/0.1)
DEFAULT_SETTINGS = ("1-0.0", "10-0.0", "1-0.1", "10-0.1")


def parse_setting(text: str) -> Tuple[int, float]:
    """'100-0.1' -> (100, 0.1), the paper's column names; raises UsageError."""
    match = re.fullmatch(r"(\d+)-(\d*\.?\d+)", text)
    if not match:
        raise UsageError(f"--settings: '{text}' is not IR-NR such as 100-0.1 or 1-0.0")
    return int(match.group(1)), float(match.group(2))


def default_settings(dataset: str) -> Tuple[str, ...]:
    """The paper's columns for the dataset where it has a table, else DEFAULT_SETTINGS."""
    paper = load_paper_results().get(dataset)
    return tuple(paper["columns"]) if paper else DEFAULT_SETTINGS


class RaisingParser(argparse.ArgumentParser):
    """implicit-augment.py's parser inside run-table.py: an error is a UsageError that
    run-table.py reports as its own one line."""

    def error(self, message):
        raise UsageError(f"{message} (options passed on to implicit-augment.py)")


class GivenOnlyParser(RaisingParser):
    """RaisingParser whose options have no defaults: only the options actually given end up
    in the namespace."""

    def add_argument(self, *names, **options):
        return super().add_argument(*names, **{**options, "default": argparse.SUPPRESS})


def training_parser(given_only: bool = False) -> argparse.ArgumentParser:
    parser_class = GivenOnlyParser if given_only else RaisingParser
    return add_training_arguments(parser_class(prog="implicit-augment.py", add_help=False))


def check_pass_through(arguments: Sequence[str]) -> None:
    """The options run-table.py passes on to every run: implicit-augment.py's own parser
    must accept them, and none may be one the table sets itself. Raises UsageError."""
    given = vars(training_parser(given_only=True).parse_args(list(arguments)))
    taken = [SET_BY_THE_TABLE[dest] for dest in given if dest in SET_BY_THE_TABLE]
    if taken:
        raise UsageError(f"run-table.py sets {', '.join(taken)} itself; leave "
                         f"{'it' if len(taken) == 1 else 'them'} out")


@dataclass(frozen=True)
class RunSpec:
    """One cell of one run: what implicit-augment.py is given, and where its files go."""
    dataset: str  # the folder under --data: the dataset's name (folder_{name}_{hash} for --dataset folder)
    data: str
    run_folder: str
    label: str  # the paper's row name (Baseline, A_W_S, ...)
    config: Configuration
    arguments: Tuple[str, ...]  # implicit-augment.py's options, --resume included
    identity: Tuple[Tuple[str, object], ...]  # the options a finished result must agree on

    @property
    def folder(self) -> Path:
        return run_files.run_dir(self.data, self.dataset, self.run_folder)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def title(self) -> str:
        return f"{self.label} {self.config.setting} {self.run_folder}"

    @property
    def log_path(self) -> Path:
        return run_files.run_log_path(self.folder, self.name)

    @property
    def results_path(self) -> Path:
        return run_files.results_path(self.folder, self.name)

    def is_finished(self) -> bool:
        """A results file says finished, with the options this table asks for (another
        --epochs, say, is not this cell's result: the run's --resume then says what differs)."""
        try:
            results = run_files.load_results(self.results_path)
        except run_files.UnreadableFile:
            return False
        saved = results.get("config") or {}
        return run_files.finished(results) and all(
            saved_option(saved, key) == value for key, value in self.identity)

    def running_elsewhere(self) -> Optional[str]:
        """'pid … on host' when another live process trains this configuration."""
        return run_files.lock_holder(self.folder, self.name)


def expand(dataset: str, data: str, labels: Sequence[str], settings: Sequence[str], runs: int,
           pass_through: Sequence[str]) -> List[RunSpec]:
    """Every (run folder, setting, configuration), run0's whole table first so that a
    partial table already has a number in every cell. Checks every command with
    implicit-augment.py's own checks; raises UsageError."""
    methods = paper_methods()
    unknown = [label for label in labels if label not in methods]
    if unknown:
        raise UsageError(f"--configs: unknown {', '.join(unknown)}; choose from {', '.join(methods)}")
    check_all([at_least_one("--runs", runs)])
    check_pass_through(pass_through)
    pairs = [parse_setting(text) for text in settings]
    parser = training_parser()
    specs, warnings, settings = [], [], None
    for run in range(runs):
        for imbalance, noise in dict.fromkeys(pairs):
            for label in dict.fromkeys(labels):
                aug_model, los_model, hyper_opt = methods[label]
                arguments = ["--data", str(data), "--dataset", dataset, "-r", f"run{run}",
                             "-ir", str(imbalance), "-nr", str(noise), "--aug-model", aug_model,
                             "--los-model", los_model, "--hyper-opt", hyper_opt,
                             *pass_through, "--resume"]
                # resolve() warns on stderr (e.g. a --hyper-start with no hyper epoch); say it once
                stderr = io.StringIO()
                with contextlib.redirect_stderr(stderr):
                    parsed = parser.parse_args(arguments)
                    # every cell has the table's --dataset and --data-dir: a folder dataset's
                    # folder is read (each file scanned) once per table, not once per cell
                    if settings is None:
                        settings = dataset_settings(parsed)
                    options = resolve(parsed, settings)
                warnings += [line for line in stderr.getvalue().splitlines() if line not in warnings]
                config = Configuration(
                    options.model, aug_model, los_model, hyper_opt, options.imbalance_ratio,
                    options.subsample_ratio, options.noise_ratio, options.overfit, options.oversplit,
                    tuple(options.paper_text), tuple(options.policy_variant))
                identity = tuple((key, getattr(options, key)) for key in IDENTITY_OPTIONS)
                specs.append(RunSpec(settings.name, str(data), f"run{run}", label, config,
                                     tuple(arguments), identity))
    for line in warnings:
        print(line, file=sys.stderr)
    return specs
