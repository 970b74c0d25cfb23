"""Reading the runs' results files for the reports (their format is in
custom_runs/run_files.py): one run folder's record of a configuration, and the checks on
what a report may count: finished or not, the metric's section, the run's length, the
code and compute paths of its attempts, and the command that writes a lost file again."""
import argparse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from custom_runs import run_files
from custom_runs.identity import IDENTITY_OPTIONS, Configuration, command_line, paper_methods
from custom_runs.options import add_training_arguments

# --metric -> section of the results file, in the table's order
METRICS = {"best": "best", "valid": "best_valid", "last": "final"}
METRIC_LABELS = {"best": "test-sel. (paper)", "valid": "valid-sel.", "last": "last"}


class ReportError(RuntimeError):
    """Something the user must fix before there is anything to report; the message says what."""


def method_label(aug_model: str, los_model: str, hyper_opt: str) -> str:
    """The paper's row name (Baseline, FAA, A_W_S, ...) or AUG/LOS/OPT for other combinations."""
    for name, method in paper_methods().items():
        if method == (aug_model, los_model, hyper_opt):
            return name
    return f"{aug_model}/{los_model}/{hyper_opt}"


@dataclass
class RunRecord:
    run_folder: str
    results_file: Path
    checkpoint: Path
    finished: bool
    progress: str  # "epoch 12/200"
    acc: Optional[float] = None
    minority_acc: Optional[float] = None
    untested: Tuple[int, ...] = ()  # classes with no test image (no accuracy of their own)
    epochs: Optional[int] = None  # the run's --epochs
    attempts: Optional[str] = None  # mixed_attempts: its epochs' code and compute paths differ

    @property
    def error(self) -> Optional[float]:
        return None if self.acc is None else 100.0 - self.acc

    @property
    def minority_error(self) -> Optional[float]:
        return None if self.minority_acc is None else 100.0 - self.minority_acc


def metric_entry(results: dict, metric: str, path: Path) -> Optional[dict]:
    """The results file's section of `metric`; None for a validation-selected number the file
    cannot have (written before validation selection, format 1)."""
    section = METRICS[metric]
    entry = results.get(section)
    if metric == "valid" and entry is None:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("acc"), (int, float)):
        raise run_files.UnreadableFile(f"{path} has no number at {section}.acc although its status "
                                       f"is finished; delete it and re-run the configuration")
    return entry


def untested_classes(entry: dict) -> Tuple[int, ...]:
    """The classes whose per-class accuracy is null: they had no test image."""
    per_class = entry.get("per_class_acc")
    return tuple(label for label, acc in enumerate(per_class) if acc is None) \
        if isinstance(per_class, list) else ()


def untested_text(classes: Sequence[int]) -> str:
    many = len(classes) > 1
    return (f"class{'es' if many else ''} {', '.join(map(str, classes))} "
            f"{'have' if many else 'has'} no test image")


def code_of(results: dict) -> str:
    """Which code wrote a results file: the project's commit (12 digits), marked when the
    checkout had uncommitted changes."""
    return code_label(results.get("versions"))


def code_label(versions) -> str:
    """code_of for a dict with "commit" and "uncommitted_changes" (versions, an attempt)."""
    commit = versions.get("commit") if isinstance(versions, dict) else None
    if not isinstance(commit, str):
        return "no recorded commit"  # written before results files recorded one
    if commit == "unknown":
        return "an unknown commit"
    label = commit[:12]
    if versions.get("uncommitted_changes") is True:
        label += " with uncommitted changes"
    return label


def attempts_of(results: dict) -> List[dict]:
    """The attempts that trained a run (results file `attempts`); a file written before they
    were recorded is one attempt, of its versions and compute path."""
    attempts = results.get("attempts")
    if isinstance(attempts, list) and attempts and all(isinstance(a, dict) for a in attempts):
        return attempts
    versions = results.get("versions") if isinstance(results.get("versions"), dict) else {}
    path = results.get("compute_path") if isinstance(results.get("compute_path"), dict) else {}
    return [{"first_epoch": 0, "commit": versions.get("commit"),
             "uncommitted_changes": versions.get("uncommitted_changes"),
             "compute_path": path.get("description")}]


def mixed_attempts(results: dict) -> Optional[str]:
    """"epochs 1-2 on … (path), epoch 3 on … (path)" where a run's epochs come from attempts
    that differ in code or compute path; None where they agree. Attempts that trained no
    epoch (stopped before the end of their first) are left out."""
    attempts = attempts_of(results)
    done = results.get("epochs_done")
    ends = [attempt.get("first_epoch") for attempt in attempts[1:]] + [done]
    spans = []
    for attempt, end in zip(attempts, ends):
        first = attempt.get("first_epoch")
        if not isinstance(first, int) or not isinstance(end, int) or end <= first:
            continue
        epochs = f"epoch {end}" if end == first + 1 else f"epochs {first + 1}-{end}"
        spans.append((epochs, code_label(attempt), attempt.get("compute_path") or "unknown compute path"))
    if len({(code, path) for _, code, path in spans}) < 2:
        return None
    return ", ".join(f"{epochs} on {code} ({path})" for epochs, code, path in spans)


def different_code_note(codes: Counter) -> Optional[str]:
    """One note line when the counted runs come from more than one version of the code."""
    if len(codes) < 2:
        return None
    each = ", ".join(f"{code} ({count} run{'s' if count > 1 else ''})"
                     for code, count in codes.most_common())
    return f"the runs counted come from different code: {each} (versions.commit of their results files)"


def run_length(results: dict) -> Optional[int]:
    """A run's --epochs (config.epochs), which reports never average across."""
    config = results.get("config")
    epochs = config.get("epochs") if isinstance(config, dict) else None
    epochs = results.get("epochs") if epochs is None else epochs
    return epochs if isinstance(epochs, int) else None


def length_text(epochs: Optional[int]) -> str:
    return "unknown length" if epochs is None else f"{epochs} epochs"


def is_finished(results: dict) -> bool:
    return run_files.finished(results)


def _progress(results: dict) -> str:
    progress = f"epoch {results.get('epochs_done', '?')}/{results.get('epochs', '?')}"
    if results.get("status") == "finished" and not run_files.finished(results):
        progress += f", no number at {' and '.join(run_files.missing_numbers(results))}"
    return progress


def resume_options() -> Tuple[str, ...]:
    """The options a saved configuration must hold for a command to repeat the run: those a
    resume must agree on, and --lr, which a resume may lower but which otherwise stays the
    run's own."""
    return IDENTITY_OPTIONS + ("lr",)


def resume_command(data_root, run_folder: str, options: dict, then: str = "--resume") -> str:
    """implicit-augment.py with the run's own options (its saved configuration, from a results
    file or a last_ checkpoint: every option that differs from implicit-augment.py's default),
    then `then`: --resume, or --force to train it again."""
    defaults = vars(add_training_arguments(argparse.ArgumentParser(add_help=False)).parse_args([]))
    arguments = ["--data", data_root, "-r", run_folder]
    for key, default in defaults.items():
        if key in ("data", "run_folder", "resume", "force") or options.get(key, default) == default:
            continue
        value, flag = options[key], "--" + key.replace("_", "-")
        if isinstance(value, bool):
            arguments += [flag] if value else []
        elif isinstance(value, (list, tuple)):
            arguments += [flag] + list(value)
        elif value is not None:
            arguments += [flag, value]
    return command_line("implicit-augment.py", arguments + [then])


def repeats_the_run(options) -> bool:
    """Whether a saved configuration holds what a command that repeats the run needs."""
    return isinstance(options, dict) and all(key in options for key in resume_options())


def rebuild_hint(data_root, results_file: Path) -> str:
    """How to write a lost or unreadable results file again. implicit-augment.py --resume
    rewrites it from the last_ checkpoint, training nothing if the run had finished; --force
    would discard that checkpoint. The resume needs the run's own options (its --epochs, ...),
    which only the checkpoint still knows."""
    folder = results_file.parent
    last = run_files.last_checkpoint_path(folder, run_files.config_name_from_results(results_file))
    original = (f"{command_line('implicit-augment.py', ['--data', data_root, '-r', folder.name])} "
                f"with the run's original options")
    try:
        saved = run_files.load_torch(last, mmap=True)
    except run_files.UnreadableFile:  # missing, truncated, foreign: a resume could not read it either
        return f"{last.name} is missing or unreadable too, so train the run again: {original} plus --force"
    options = saved.get("config") if isinstance(saved, dict) else None
    if not repeats_the_run(options):
        return f"rebuild it from {last.name} (no retraining if the run finished): {original} plus --resume"
    done, epochs = int(saved.get("epoch", -1)) + 1, options["epochs"]
    what = "rebuild it without retraining" if done >= epochs else \
        f"continue the run from {last.name} (epoch {done} of {epochs})"
    return f"{what}: {resume_command(data_root, folder.name, options)}"


def read_results(data_root, results_file: Path) -> dict:
    """run_files.load_results, whose error says how to write the file again."""
    try:
        return run_files.load_results(results_file)
    except run_files.UnreadableFile as error:
        raise run_files.UnreadableFile(f"{error}; {rebuild_hint(data_root, results_file)}") from None


def read_run(folder: Path, config: Configuration, metric: str, data_root, dataset: str,
             check_checkpoint: bool, warnings: List[str],
             data_dir: Optional[str] = None) -> Optional[RunRecord]:
    """One run folder's record of `config`, or None if the folder never ran it.

    A folder ran the configuration if any of its files is there; then its results
    file must be readable, and for a finished run so must the checkpoint shown
    beside the accuracy (its stored best accuracy is checked against the results)."""
    name = config.name
    results_file = run_files.results_path(folder, name)
    best = run_files.best_checkpoint_path(folder, name)
    last = run_files.last_checkpoint_path(folder, name)
    if not any(path.is_file() for path in (results_file, best, last)):
        return None
    results = read_results(data_root, results_file)
    # a finished configuration whose checkpoint is lost is trained again from scratch, with
    # the options its results file records (its --epochs, ...)
    if repeats_the_run(results.get("config")):
        hint = f"re-run it: {resume_command(data_root, folder.name, results['config'], '--force')}"
    else:
        hint = (f"re-run it: {config.train_command(data_root, dataset, folder.name, data_dir)} "
                f"with the run's original options plus --force")
    checkpoint = run_files.checkpoint_path(folder, name, metric)
    record = RunRecord(folder.name, results_file, checkpoint, is_finished(results), _progress(results),
                       epochs=run_length(results), attempts=mixed_attempts(results))
    if not record.finished:
        return record
    entry = metric_entry(results, metric, results_file)
    if entry is None:  # reported as a run without a validation-selected number, not counted
        return record
    record.acc = float(entry["acc"])
    minority = entry.get("minority_acc")
    record.minority_acc = float(minority) if isinstance(minority, (int, float)) else None
    record.untested = untested_classes(entry)
    if check_checkpoint:
        if not checkpoint.is_file():
            raise run_files.UnreadableFile(f"{checkpoint} does not exist; {hint}")
        saved = run_files.load_torch(checkpoint, mmap=True)
        if not isinstance(saved, dict) or "acc" not in saved:
            raise run_files.UnreadableFile(f"{checkpoint} is not a checkpoint of implicit-augment.py "
                                           f"(no 'acc'); {hint}")
        # best_ and last_ store the best test accuracy, bestvalid_ the test accuracy of its epoch
        section = "valid" if metric == "valid" else "best"
        stored = metric_entry(results, section, results_file)["acc"]
        what = "the test accuracy of its epoch" if section == "valid" else "best accuracy"
        if abs(float(saved["acc"]) - float(stored)) > 1e-6:
            warnings.append(f"{checkpoint} stores {what} {float(saved['acc']):.4f} %, its "
                            f"results file {float(stored):.4f} %; the results file is reported")
    return record
