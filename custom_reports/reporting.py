"""Numbers and tables of get-results.py, read from the runs' results files (their
format is in custom_runs/run_files.py).

Two views of the same files:
- one configuration over its runs (the paper's get-results): each run's
  checkpoint and accuracy, then mean and sample standard deviation;
- every configuration found for a dataset as the paper's table: one row per
  method, one column per IR-NR setting, cells "error mean ± std (runs)",
  optionally beside the paper's numbers (paper_results.json, a copy of the
  paper's tables kept in the package so nothing reads outside the project).

Accuracies come from the results JSON (best.acc, best_valid.acc or final.acc:
the epoch chosen with the test labels, the paper's protocol; the epoch chosen on
the clean validation split; the last epoch); a run whose status is not
"finished" is listed but never averaged, since its best so far is not the number
a finished run reports. The table puts the three side by side and compares each
row with a reference row run folder by run folder (paired: the configurations of
a run folder share its split and noise draw). Every path comes from run_files.
"""
import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from custom_datasets.folder import FOLDER_DATASET
from custom_runs import run_files
from custom_runs.identity import Configuration, command_line, load_paper_results, paper_methods
from custom_runs.options import PAPER_TEXT_ITEMS, POLICY_VARIANT_ITEMS
from custom_reports.run_reading import (METRIC_LABELS, METRICS, ReportError, RunRecord, _is_finished,
                                        _length_text, _metric_entry, code_of, different_code_note,
                                        method_label, mixed_attempts, read_results, read_run,
                                        run_length, untested_classes, untested_text)
from custom_reports.statistics import (MISSING, PairedDifference, Summary, _number, json_number,
                                       paired_difference, summarize)

REFERENCE = "Baseline"  # the row every other row is compared with, unless --versus says another
FORMATS = ("text", "markdown", "csv", "json")


# ----------------------------------------------------------------------------- one configuration

@dataclass
class RunReport:
    dataset: str
    config: Configuration
    metric: str
    runs: List[RunRecord]  # finished runs that are averaged
    unfinished: List[RunRecord]
    minority: bool
    paper: Optional[Tuple[float, Optional[float], str]] = None  # error mean, std, paper's model
    notes: List[str] = field(default_factory=list)
    epochs: Optional[int] = None  # the length of the runs counted

    @property
    def accuracy(self) -> Summary:
        return summarize([run.acc for run in self.runs])

    @property
    def error(self) -> Summary:
        return summarize([run.error for run in self.runs])

    @property
    def minority_accuracy(self) -> Summary:
        return summarize([run.minority_acc for run in self.runs])

    @property
    def minority_error(self) -> Summary:
        return summarize([run.minority_error for run in self.runs])


def paper_number(dataset: str, config: Configuration) -> Optional[Tuple[float, Optional[float], str]]:
    """The paper's error (mean, std, its model) for this method and IR-NR, if it reports one."""
    paper = load_paper_results().get(dataset)
    label = method_label(*config.method)
    if paper is None or label not in paper or config.ablation or config.setting not in paper["columns"]:
        return None
    mean, std = paper[label][paper["columns"].index(config.setting)]
    return mean, std, paper["model"]


def run_report(data_root, dataset: str, config: Configuration, metric: str = "best",
               required_runs: Optional[int] = None, minority: bool = False,
               with_paper: bool = False, data_dir: Optional[str] = None,
               epochs: Optional[int] = None) -> RunReport:
    """Every run folder's result of one configuration; raises ReportError / UnreadableFile.
    `data_dir`: a folder dataset's images, for the commands the errors suggest. Only runs of
    one length are counted: `epochs`, or else the length most finished runs have (the
    longer on a tie); the others are named in a note."""
    folders = run_files.find_run_folders(data_root, dataset)
    warnings: List[str] = []
    records = [record for folder in folders
               for record in [read_run(folder, config, metric, data_root, dataset, True, warnings,
                                       data_dir)]
               if record is not None]
    without = [record for record in records if record.finished and record.acc is None]
    finished = [record for record in records if record.finished and record.acc is not None]
    unfinished = [record for record in records if not record.finished]
    where = run_files.dataset_dir(data_root, dataset)
    if without:
        warnings.append(f"{', '.join(record.run_folder for record in without)}: written before "
                        f"validation selection (no best_valid), not counted; --metric best reads them")
    if not records:
        others = len(run_files.list_results(data_root, dataset))
        seen = (f" ({len(folders)} run folders with {others} results files of other configurations; "
                f"see --table)" if folders else "")
        raise ReportError(f"no run of {config.name} under {where}/run*/{seen}; train one with: "
                          f"{config.train_command(data_root, dataset, 'run0', data_dir)}")
    if not finished and without:
        raise ReportError(f"no run of {config.name} under {where} has a validation-selected "
                          f"number (their results files predate it); use --metric best or last, "
                          f"or train the runs again")
    if not finished:
        states = ", ".join(f"{r.run_folder} {r.progress}" for r in unfinished)
        raise ReportError(f"no finished run of {config.name} under {where} ({states}); "
                          f"wait for them or resume them with --resume")
    lengths = Counter(record.epochs for record in finished)
    chosen = epochs if epochs is not None else \
        max(lengths, key=lambda length: (lengths[length], -1 if length is None else length))
    other = [record for record in finished if record.epochs != chosen]
    finished = [record for record in finished if record.epochs == chosen]
    others = ", ".join(f"{record.run_folder} ({_length_text(record.epochs)})" for record in other)
    if not finished:
        raise ReportError(f"--epochs {epochs}: no finished run of {config.name} under {where} is "
                          f"{epochs} epochs long ({others}); choose one of those lengths or drop --epochs")
    if other:
        warnings.append(f"runs of other lengths are not counted: {others}; the runs counted are "
                        f"of {_length_text(chosen)} (choose a length with --epochs N)")
    if required_runs is not None:
        if len(finished) < required_runs:
            have = ", ".join(record.run_folder for record in finished)
            raise ReportError(f"--runs {required_runs}: found {len(finished)} finished runs of "
                              f"{config.name} ({have}) under {where}; train the missing ones with "
                              f"-r runN, or lower --runs")
        if len(finished) > required_runs:
            warnings.append(f"--runs {required_runs}: using the first {required_runs} of "
                            f"{len(finished)} finished runs")
            finished = finished[:required_runs]
    report = RunReport(dataset, config, metric, finished, unfinished, minority, notes=warnings,
                       epochs=chosen)
    report.notes += [f"{run.run_folder}: {untested_text(run.untested)}: left out of its per-class "
                     f"and minority accuracy" for run in finished if run.untested]
    report.notes += [f"{run.run_folder}: its epochs come from attempts that differ in code or compute "
                     f"path: {run.attempts} (attempts of its results file)"
                     for run in finished if run.attempts]
    if minority and any(run.minority_acc is None for run in finished):
        report.notes.append("some results files have no minority_acc; those runs count as nan")
    if with_paper:
        report.paper = paper_number(dataset, config)
        if report.paper is None:
            report.notes.append(f"the paper reports no number for {method_label(*config.method)} "
                                f"at {config.setting} on {dataset}")
        elif report.paper[2] != config.model:
            report.notes.append(f"paper numbers are for {report.paper[2]}")
    return report


def _std_text(summary: Summary) -> str:
    if summary.n == 1:
        return "nan (undefined for a single run)"
    return _number(summary.std)


def _run_report_caption(report: RunReport) -> str:
    return (f"{report.dataset}: {report.config.name} (metric: {report.metric}, "
            f"{METRIC_LABELS[report.metric]}: {METRICS[report.metric]}.acc of the results files)")


def render_run_report(report: RunReport, fmt: str = "text") -> str:
    """text and markdown carry the caption and notes; csv and json are the data only
    (json keeps the notes as a field, csv leaves them to the caller's stderr). Every format
    lists the unfinished runs and, when asked for, the paper's error and the minority numbers."""
    if fmt == "json":
        return json.dumps(_run_report_json(report), indent=1)
    if fmt == "csv":
        return _render_grid(*_run_report_grid(report), fmt)
    if fmt == "markdown":
        return _markdown(_run_report_caption(report), _render_grid(*_run_report_grid(report), fmt),
                         report.notes)
    lines = [_run_report_caption(report)]
    width = max(len(str(run.checkpoint)) for run in report.runs)
    for run in report.runs:
        line = f"{run.run_folder:>6}  {str(run.checkpoint):<{width}}  acc {run.acc:.2f} %  " \
               f"error {run.error:.2f} %"
        if report.minority:
            line += f"  minority acc {_number(run.minority_acc)} %"
        lines.append(line)
    for run in report.unfinished:
        lines.append(f"{run.run_folder:>6}  {run.results_file}  not finished ({run.progress}), not counted")
    lines.append(f"runs: {len(report.runs)}")
    summaries = [("accuracy", report.accuracy), ("error", report.error)]
    if report.minority:
        summaries += [("minority accuracy", report.minority_accuracy),
                      ("minority error", report.minority_error)]
    for label, summary in summaries:
        lines.append(f"{label + ':':<19} mean {_number(summary.mean)} %  std {_std_text(summary)}")
    if report.paper is not None:
        mean, std, model = report.paper
        lines.append(f"{'paper error:':<19} mean {mean} %  std {'n/a' if std is None else std}  "
                     f"({model})")
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


def _run_report_grid(report: RunReport):
    """The markdown and csv report: one header row, and every row has these columns
        run             a run folder; then n, mean and std of the counted runs; then, with
                        --paper, "paper mean" and "paper std" (the paper's error)
        status          "finished" (counted) or "not finished" (listed, not counted);
                        empty in the n, mean, std and paper rows
        progress        epochs done of the run's epochs, "epoch 2/4"
        file            the checkpoint whose accuracy is shown, or an unfinished run's results file
        acc, error      top-1 test accuracy and error (%); empty for an unfinished run, and the
                        paper rows give the error only
        minority acc, minority error   the same on the minority classes (only with --minority;
                        nan where a results file has no minority_acc)
    Numbers have two decimals, the paper's as the paper prints them; an undefined std is nan."""
    def numbers(acc: str, error: str, minority_acc: str = "", minority_error: str = "") -> List[str]:
        return [acc, error] + ([minority_acc, minority_error] if report.minority else [])

    header = ["run", "status", "progress", "file"] + numbers("acc", "error", "minority acc",
                                                             "minority error")
    rows = [[run.run_folder, "finished", run.progress, str(run.checkpoint)]
            + numbers(*[_number(value) for value in (run.acc, run.error, run.minority_acc,
                                                      run.minority_error)])
            for run in report.runs]
    rows += [[run.run_folder, "not finished", run.progress, str(run.results_file)] + numbers("", "")
             for run in report.unfinished]
    summaries = (report.accuracy, report.error, report.minority_accuracy, report.minority_error)
    for label, pick in (("n", lambda s: str(s.n)), ("mean", lambda s: _number(s.mean)),
                        ("std", lambda s: _number(s.std))):
        rows.append([label, "", "", ""] + numbers(*[pick(summary) for summary in summaries]))
    if report.paper is not None:
        mean, std, _ = report.paper
        rows.append(["paper mean", "", "", ""] + numbers("", str(mean)))
        rows.append(["paper std", "", "", ""] + numbers("", "" if std is None else str(std)))
    return header, rows


def _run_report_json(report: RunReport) -> dict:
    def summary(s: Summary) -> dict:
        return {"n": s.n, "mean": json_number(s.mean), "std": json_number(s.std)}
    out = {"dataset": report.dataset, "run_name": report.config.name, "metric": report.metric,
           "runs": [{"run_folder": run.run_folder, "checkpoint": str(run.checkpoint),
                     "results_file": str(run.results_file), "acc": run.acc, "error": run.error,
                     "minority_acc": run.minority_acc, "minority_error": run.minority_error}
                    for run in report.runs],
           "unfinished": [{"run_folder": run.run_folder, "progress": run.progress}
                          for run in report.unfinished],
           "epochs": report.epochs, "acc": summary(report.accuracy), "error": summary(report.error),
           "notes": report.notes}
    if report.minority:
        out["minority_acc"] = summary(report.minority_accuracy)
        out["minority_error"] = summary(report.minority_error)
    if report.paper is not None:
        out["paper_error"] = {"mean": report.paper[0], "std": report.paper[1], "model": report.paper[2]}
    return out


# ----------------------------------------------------------------------------- the paper's table

@dataclass
class Cell:
    runs: List[str] = field(default_factory=list)  # run folders, in run order
    values: List[float] = field(default_factory=list)  # error (%) of each run at the table's metric
    paper: Optional[Tuple[float, Optional[float]]] = None
    # run folders whose results file says finished but lacks an accuracy: not counted, shown
    without_number: List[str] = field(default_factory=list)
    # every metric's error (%) of each run in `runs`; None where its results file has no such number
    selections: Dict[str, List[Optional[float]]] = field(
        default_factory=lambda: {metric: [] for metric in METRICS})
    versus: Optional[PairedDifference] = None  # against the reference row, at the table's metric

    @property
    def summary(self) -> Summary:
        return summarize(self.values)

    def summary_of(self, metric: str) -> Summary:
        return summarize([value for value in self.selections[metric] if value is not None])

    def text(self, metric: str) -> str:
        return self.summary_of(metric).text() + "".join(f" [{run}: no number]"
                                                        for run in self.without_number)


@dataclass
class Row:
    name: str
    model: str
    aug_model: str
    los_model: str
    hyper_opt: str
    ablation: str
    paper_text: Tuple[str, ...] = ()
    policy_variant: Tuple[str, ...] = ()
    cells: Dict[str, Cell] = field(default_factory=dict)  # column -> cell
    epochs: Optional[int] = None  # the --epochs of its runs (None: the paper's row alone)

    @property
    def method(self) -> Tuple[str, str, str]:
        return self.aug_model, self.los_model, self.hyper_opt


@dataclass
class Table:
    dataset: str
    metric: str
    quantity: str  # "error" or "minority error"
    columns: List[str]
    rows: List[Row]
    with_paper: bool
    notes: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)  # why each unreadable results file is left out
    versus: Optional[str] = None  # the reference row of the paired comparisons; None: none made

    def caption(self) -> str:
        what = "top-1 test error" if self.quantity == "error" else \
            "test error on the minority (upper-half) classes"
        caption = (f"{self.dataset}: {what} (%), mean ± std (runs) over run folders; columns IR-NR, "
                   f"each at the epoch of best test accuracy (test-sel.: the paper's protocol, "
                   f"chosen with the test labels), of best validation accuracy (valid-sel.) "
                   f"and the last epoch; metric: {self.metric}")
        if self.versus is not None:
            caption += (f"; vs {self.versus}: the {METRIC_LABELS[self.metric]} error minus "
                        f"{self.versus}'s in the same run folder, in points (negative: fewer "
                        f"errors), mean [95 % t interval] and runs with fewer errors / runs")
        return caption


def _row_name(method: Tuple[str, str, str], model: str, ablation: str, default_model: str,
              paper_text: Sequence[str] = (), policy_variant: Sequence[str] = ()) -> str:
    """The paper's row name; other networks and the ablations say which in brackets, runs that
    follow the paper's text somewhere, or apply the fixed policies as this project did before,
    which items in parentheses."""
    name = method_label(*method)
    if ablation or model != default_model:
        name += f" [{ablation + '_' if ablation else ''}{model}]"
    if paper_text:
        items = "all" if tuple(paper_text) == PAPER_TEXT_ITEMS else ", ".join(paper_text)
        name += f" (text: {items})"
    if policy_variant:
        items = "all" if tuple(policy_variant) == POLICY_VARIANT_ITEMS else ", ".join(policy_variant)
        name += f" (policy: {items})"
    return name


def _column_key(config: Configuration):
    return -config.subsample_ratio, config.noise_ratio, config.imbalance_ratio


def build_table(data_root, dataset: str, default_model: str, metric: str = "best",
                minority: bool = False, with_paper: bool = False, model: Optional[str] = None,
                max_runs: Optional[int] = None,
                only: Optional[Sequence[Configuration]] = None,
                data_dir: Optional[str] = None, epochs: Optional[int] = None,
                run_folders: Optional[Sequence[str]] = None, versus: str = REFERENCE,
                only_settings: Optional[Sequence[Tuple[int, float]]] = None) -> Table:
    """Every configuration and IR-NR setting with results for `dataset` (only `model`'s, if
    given; only the configurations `only`, and the paper's numbers of their methods and
    settings, if given; only runs of `epochs` epochs and of the `run_folders`, if given; only
    the (IR, NR) settings `only_settings`, if given).
    With the paper's numbers asked for and none of ours yet, the paper's table alone. Runs
    of different lengths are never averaged: each length gets rows of its own. Each row is
    compared with the row `versus` (see compare_rows)."""
    paths = run_files.list_results(data_root, dataset)
    where = run_files.dataset_dir(data_root, dataset)
    paper_only = with_paper and not minority and dataset in load_paper_results()
    if not paths and not paper_only:
        source = ["--dataset", FOLDER_DATASET, "--data-dir", data_dir] if data_dir else \
            ["--dataset", dataset]
        first = command_line("implicit-augment.py", ["--data", data_root, *source, "-r", "run0"])
        raise ReportError(f"no results files under {where}/run*/; train a configuration first, "
                          f"e.g. {first}")
    wanted = None if only is None else set(only)
    quantity = "minority error" if minority else "error"
    groups: Dict[Tuple[Configuration, Optional[int]], Cell] = {}  # (configuration, length)
    notes: List[str] = []
    codes: Counter = Counter()
    untested: Counter = Counter()  # the classes without a test image -> runs counted
    resumed_elsewhere: List[str] = []  # counted runs whose attempts differ (mixed_attempts)
    unfinished = without_minority = other_length = without_valid = predating = 0
    without_number: List[str] = []  # what a results file that says finished lacks
    skipped: List[str] = []

    def error_of(entry: Optional[dict]) -> Optional[float]:
        value = None if entry is None else entry.get("minority_acc") if minority else entry["acc"]
        return 100.0 - float(value) if isinstance(value, (int, float)) else None
    for path in paths:
        try:  # one broken file must not hide every other run's numbers
            results = read_results(data_root, path)
            config = Configuration.from_results(results, path)
            sections = {name: _metric_entry(results, name, path) for name in METRICS} \
                if _is_finished(results) else None
        except run_files.UnreadableFile as error:
            skipped.append(f"skipped {error}")
            continue
        if (model is not None and config.model != model) or (wanted is not None and config not in wanted) \
                or (run_folders is not None and path.parent.name not in run_folders) \
                or (only_settings is not None
                    and (config.imbalance_ratio, config.noise_ratio) not in set(only_settings)):
            continue
        length = run_length(results)
        if epochs is not None and length != epochs:
            other_length += 1
            continue
        if sections is None and results.get("status") == "finished":
            groups.setdefault((config, length), Cell()).without_number.append(path.parent.name)
            without_number += [name for name in run_files.missing_numbers(results)
                               if name not in without_number]
            continue
        if sections is None:
            unfinished += 1
            continue
        entry = sections[metric]
        if entry is None:
            without_valid += 1
            continue
        error = error_of(entry)
        if error is None:
            without_minority += 1
            continue
        cell = groups.setdefault((config, length), Cell())
        if max_runs is None or len(cell.values) < max_runs:
            cell.runs.append(path.parent.name)
            cell.values.append(error)
            for name, section in sections.items():
                cell.selections[name].append(error_of(section))
            predating += sections["valid"] is None
            codes[code_of(results)] += 1
            if untested_classes(entry):
                untested[untested_classes(entry)] += 1
            if mixed_attempts(results):
                resumed_elsewhere.append(f"{path.parent.name} of {method_label(*config.method)} "
                                         f"at {config.setting}")
    if unfinished:
        notes.append(f"{unfinished} results files of unfinished runs are not counted")
    if without_valid:
        notes.append(f"{without_valid} results files written before validation selection (no "
                     f"best_valid) are not counted; --metric best counts them")
    if predating:
        notes.append(f"{predating} results files written before validation selection have no "
                     f"valid-selected number: those columns leave them out ({MISSING} where "
                     f"none is left)")
    if without_minority:
        notes.append(f"{without_minority} results files without {METRICS[metric]}.minority_acc "
                     f"are not counted")
    if skipped:
        notes.append(f"{len(skipped)} results files that cannot be read are not counted")
    if other_length:
        notes.append(f"{other_length} results file{'s' if other_length > 1 else ''} of another "
                     f"length than --epochs {epochs} {'are' if other_length > 1 else 'is'} not counted")
    lengths = sorted({length for _, length in groups}, key=lambda length: -1 if length is None else length)
    split = len(lengths) > 1
    if split:
        notes.append(f"the runs counted differ in length ({', '.join(map(str, lengths))} epochs): "
                     f"each length has rows of its own")
    broken = sum(len(cell.without_number) for cell in groups.values())
    if broken:
        notes.append(f"{broken} results file{' says' if broken == 1 else 's say'} finished but "
                     f"{'has' if broken == 1 else 'have'} no number at {' or '.join(without_number)} "
                     f"(marked [runN: no number]): not counted; run-table.py runs "
                     f"{'it' if broken == 1 else 'them'} again, as does implicit-augment.py with "
                     f"the run's options plus --resume")
    notes += [f"{untested_text(classes)} in {count} run{'s' if count > 1 else ''} counted: left out "
              f"of {'their' if count > 1 else 'its'} per-class and minority accuracy"
              for classes, count in untested.items()]
    code_note = different_code_note(codes)
    if code_note:
        notes.append(code_note)
    if resumed_elsewhere:
        notes.append(f"runs resumed on other code or another compute path: "
                     f"{', '.join(resumed_elsewhere)} (get-results.py for the configuration lists "
                     f"their attempts)")
    if not groups:
        of_model = f" of model {model}" if model else ""
        if only_settings is not None:
            of_model += " at " + " ".join(f"{imbalance}-{run_files.number_text(noise)}"
                                          for imbalance, noise in only_settings)
        first = f"; {skipped[0]}" if skipped else ""
        nothing = (f"no finished run{of_model} under {where}/run*/ ({len(paths)} results files, "
                   f"{unfinished} unfinished, {len(skipped)} unreadable){first}")
        if not paper_only:
            raise ReportError(nothing)
        notes.append(f"{nothing}: the paper's numbers alone")

    order = {method: index for index, method in enumerate(paper_methods().values())}
    rows: Dict[Tuple, Row] = {}
    columns: Dict[str, Tuple] = {}
    for (config, length), cell in groups.items():
        key = (config.ablation, config.model, config.method, config.paper_text, config.policy_variant,
               length if split else None)
        if key not in rows:
            name = _row_name(config.method, config.model, config.ablation, default_model,
                             config.paper_text, config.policy_variant)
            name += f" ({_length_text(length)})" if split else ""
            rows[key] = Row(name, config.model, *config.method, config.ablation, config.paper_text,
                            config.policy_variant, epochs=length)
        rows[key].cells[config.setting] = cell
        columns.setdefault(config.setting, _column_key(config))

    paper = load_paper_results().get(dataset) if with_paper else None
    if with_paper and paper is None:
        notes.append(f"the paper reports no numbers for {dataset}")
    elif with_paper and minority:
        notes.append("the paper reports no minority-class error; no paper columns")
        paper = None
    if paper is not None:
        # beside the longest runs, the nearest to the paper's 200 epochs
        _add_paper(paper, rows, columns, default_model, lengths[-1] if split else None)
        if paper["model"] != default_model:
            notes.append(f"paper numbers are for {paper['model']}")
    if wanted is not None:
        methods = {config.method for config in wanted}
        settings = {config.setting for config in wanted}
        rows = {key: row for key, row in rows.items()
                if (row.aug_model, row.los_model, row.hyper_opt) in methods}
        columns = {name: key for name, key in columns.items() if name in settings}
    if only_settings is not None:  # the paper's columns too
        columns = {name: key for name, key in columns.items()
                   if (key[2], key[1]) in set(only_settings)}
    column_names = sorted(columns, key=lambda name: columns[name])
    # the dataset's own network first, then other networks, then ablations; paper rows in paper order
    row_list = sorted(rows.values(), key=lambda row: (
        bool(row.ablation), row.model != default_model, row.model,
        order.get((row.aug_model, row.los_model, row.hyper_opt), len(order)), -(row.epochs or 0),
        row.name))
    compared = compare_rows(row_list, versus)
    if not compared and groups:
        notes.append(f"no paired comparison: no row {versus} shares a run folder with another row")
    return Table(dataset, metric, quantity, column_names, row_list, paper is not None, notes, skipped,
                 versus if compared else None)


def _method_of(label: str) -> Optional[Tuple[str, str, str]]:
    """The (aug, loss, optimiser) a row label names: a paper's method or AUG/LOS/OPT."""
    if label in paper_methods():
        return paper_methods()[label]
    parts = tuple(label.split("/"))
    return parts if len(parts) == 3 else None


def compare_rows(rows: Sequence[Row], versus: str) -> bool:
    """Each row's paired difference against its reference row, cell by cell: the row of the
    method `versus` with the same network, ablation, --paper-text items and length if there is
    one (so another network's rows are compared with that network's Baseline), else the row
    named exactly `versus` if its runs have the same length. A ReportError if `versus` names
    no row; False if no cell was compared."""
    by_name = {row.name: row for row in rows}
    by_key = {(row.ablation, row.model, row.method, row.paper_text, row.policy_variant, row.epochs): row
              for row in rows}
    method = _method_of(versus)
    if versus not in by_name and not any(row.method == method for row in rows):
        if versus == REFERENCE:
            return False
        raise ReportError(f"--versus {versus}: no such row in this table; rows: "
                          f"{', '.join(by_name)}")
    compared = False
    for row in rows:
        reference = by_key.get((row.ablation, row.model, method, row.paper_text, (), row.epochs)) or \
            by_name.get(versus)
        if reference is None or reference is row or reference.epochs != row.epochs:
            continue
        for column, cell in row.cells.items():
            base = reference.cells.get(column)
            if cell.runs and base is not None and base.runs:
                cell.versus = paired_difference(cell.runs, cell.values, base.runs, base.values,
                                                reference.name)
                compared = True
    return compared


def _add_paper(paper: dict, rows: Dict[Tuple, Row], columns: Dict[str, Tuple],
               default_model: str, length: Optional[int] = None) -> None:
    """Paper numbers go beside rows of the paper's network only (other networks are not comparable),
    and of runs of `length` epochs where the table has rows per length; the paper's rows and
    columns appear even where we have no run."""
    for column in paper["columns"]:
        if column not in columns:
            imbalance, noise = column.split("-")
            columns[column] = (-1.0, float(noise), int(imbalance))
    for name, method in paper_methods().items():
        if name not in paper:
            continue
        key = ("", paper["model"], method, (), (), length)  # beside the released data path's rows
        if key not in rows:
            rows[key] = Row(_row_name(method, paper["model"], "", default_model), paper["model"],
                            *method, "")
        row = rows[key]
        for column, (mean, std) in zip(paper["columns"], paper[name]):
            row.cells.setdefault(column, Cell()).paper = (mean, std)


def _paper_text(paper: Optional[Tuple[float, Optional[float]]]) -> str:
    if paper is None:
        return MISSING
    mean, std = paper
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.2f}"


def _table_grid(table: Table):
    header = ["Method"]
    for column in table.columns:
        header += [f"{column} {METRIC_LABELS[metric]}" for metric in METRICS]
        header += [f"{column} paper"] if table.with_paper else []
        header += [f"{column} vs {table.versus}"] if table.versus else []
    rows = []
    for row in table.rows:
        cells = [row.name]
        for column in table.columns:
            cell = row.cells.get(column, Cell())
            cells += [cell.text(metric) for metric in METRICS]
            if table.with_paper:
                cells.append(_paper_text(cell.paper))
            if table.versus:
                cells.append(MISSING if cell.versus is None else cell.versus.text())
        rows.append(cells)
    return header, rows


def _render_grid(header: List[str], rows: List[List[str]], fmt: str) -> str:
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(line[i]) for line in [header] + rows) for i in range(len(header))]
    def fmt_line(cells):
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()
    return "\n".join([fmt_line(header), "  ".join("-" * w for w in widths)] + [fmt_line(r) for r in rows])


def _table_csv(table: Table) -> str:
    """Numbers, not "mean ± std" strings, so that a spreadsheet can use them."""
    header = ["Method", "model", "aug_model", "los_model", "hyper_opt", "ablation", "paper_text",
              "policy_variant"]
    versus = ("mean", "low", "high", "n", "wins", "verdict")
    for column in table.columns:
        for metric in METRICS:
            header += [f"{column} {metric} mean", f"{column} {metric} std", f"{column} {metric} n"]
        if table.with_paper:
            header += [f"{column} paper mean", f"{column} paper std"]
        if table.versus:
            header += [f"{column} vs {table.versus} {what}" for what in versus]
    rows = []
    for row in table.rows:
        cells = [row.name, row.model, row.aug_model, row.los_model, row.hyper_opt, row.ablation,
                 " ".join(row.paper_text), " ".join(row.policy_variant)]
        for column in table.columns:
            cell = row.cells.get(column, Cell())
            for metric in METRICS:
                summary = cell.summary_of(metric)
                if summary.n:
                    cells += [_number(summary.mean, 4), _number(summary.std, 4), str(summary.n)]
                else:
                    cells += ["", "", "0"]
            if table.with_paper:
                mean, std = cell.paper if cell.paper is not None else ("", "")
                cells += [str(mean), "" if std is None else str(std)]
            if table.versus:
                cells += [""] * len(versus) if cell.versus is None else _paired_csv(cell.versus)
        rows.append(cells)
    return _render_grid(header, rows, "csv")


def _paired_csv(paired: PairedDifference) -> List[str]:
    """mean, low, high, n, wins, verdict; an undefined interval (one run) is empty, not nan."""
    low, high = paired.interval
    bounds = ["", ""] if paired.n < 2 else [_number(low, 4), _number(high, 4)]
    return [_number(paired.mean, 4), *bounds, str(paired.n), str(paired.wins), paired.verdict]


def _paired_json(paired: PairedDifference) -> dict:
    low, high = paired.interval
    return {"against": paired.against, "runs": paired.runs, "differences": paired.differences,
            "n": paired.n, "mean": json_number(paired.mean), "low": json_number(low),
            "high": json_number(high), "wins": paired.wins, "verdict": paired.verdict}


def _table_json(table: Table) -> dict:
    rows = []
    for row in table.rows:
        cells = {}
        for column in table.columns:
            cell = row.cells.get(column)
            if cell is None:
                continue
            summary = cell.summary
            cells[column] = {"n": summary.n, "mean": json_number(summary.mean),
                             "std": json_number(summary.std), "runs": cell.runs, "values": cell.values}
            if cell.without_number:
                cells[column]["without_number"] = cell.without_number
            cells[column]["selections"] = {
                metric: {"n": picked.n, "mean": json_number(picked.mean), "std": json_number(picked.std),
                         "values": cell.selections[metric]}
                for metric, picked in ((metric, cell.summary_of(metric)) for metric in METRICS)}
            if table.with_paper:
                cells[column]["paper_mean"] = None if cell.paper is None else cell.paper[0]
                cells[column]["paper_std"] = None if cell.paper is None else cell.paper[1]
            if table.versus:
                cells[column]["versus"] = None if cell.versus is None else _paired_json(cell.versus)
        rows.append({"name": row.name, "model": row.model, "aug_model": row.aug_model,
                     "los_model": row.los_model, "hyper_opt": row.hyper_opt,
                     "ablation": row.ablation, "paper_text": list(row.paper_text),
                     "policy_variant": list(row.policy_variant), "epochs": row.epochs,
                     "cells": cells})
    return {"dataset": table.dataset, "metric": table.metric, "quantity": table.quantity,
            "unit": "%", "columns": table.columns, "selections": METRIC_LABELS,
            "versus": table.versus, "rows": rows, "notes": table.notes}


def render_table(table: Table, fmt: str = "text") -> str:
    """text and markdown carry the caption and notes; csv and json are the data only
    (json keeps the notes as a field, csv leaves them to the caller's stderr)."""
    if fmt == "json":
        return json.dumps(_table_json(table), indent=1)
    if fmt == "csv":
        return _table_csv(table)
    body = _render_grid(*_table_grid(table), fmt)
    if fmt == "markdown":
        return _markdown(table.caption(), body, table.notes)
    return "\n".join([table.caption(), body] + [f"note: {note}" for note in table.notes])


def _markdown(caption: str, body: str, notes: Sequence[str]) -> str:
    """A bold caption, the table, and the notes below it."""
    notes = [f"note: {note}" for note in notes]
    return "\n".join([f"**{caption}**", "", body] + ([""] + notes if notes else []))
