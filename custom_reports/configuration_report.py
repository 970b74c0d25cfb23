"""One configuration over its run folders, as get-results.py reports it (the paper's
get-results): each run's checkpoint and accuracy, then the mean and sample standard
deviation, as text, Markdown, CSV or JSON. Every configuration at once is the table of
custom_reports/tables.py.

Accuracies come from the results JSON (best.acc, best_valid.acc or final.acc:
the epoch chosen with the test labels, the paper's protocol; the epoch chosen on
the clean validation split; the last epoch); a run whose status is not
"finished" is listed but never averaged, since its best so far is not the number
a finished run reports. Every path comes from run_files.
"""
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from custom_runs import run_files
from custom_runs.identity import Configuration, load_paper_results
from custom_reports.run_reading import (METRIC_LABELS, METRICS, ReportError, RunRecord, length_text,
                                        method_label, read_run, untested_text)
from custom_reports.statistics import Summary, decimal_text, json_number, summarize
from custom_reports.table_formats import markdown_text, render_grid


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
    others = ", ".join(f"{record.run_folder} ({length_text(record.epochs)})" for record in other)
    if not finished:
        raise ReportError(f"--epochs {epochs}: no finished run of {config.name} under {where} is "
                          f"{epochs} epochs long ({others}); choose one of those lengths or drop --epochs")
    if other:
        warnings.append(f"runs of other lengths are not counted: {others}; the runs counted are "
                        f"of {length_text(chosen)} (choose a length with --epochs N)")
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
    return decimal_text(summary.std)


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
        return render_grid(*_run_report_grid(report), fmt)
    if fmt == "markdown":
        return markdown_text(_run_report_caption(report), render_grid(*_run_report_grid(report), fmt),
                             report.notes)
    lines = [_run_report_caption(report)]
    width = max(len(str(run.checkpoint)) for run in report.runs)
    for run in report.runs:
        line = f"{run.run_folder:>6}  {str(run.checkpoint):<{width}}  acc {run.acc:.2f} %  " \
               f"error {run.error:.2f} %"
        if report.minority:
            line += f"  minority acc {decimal_text(run.minority_acc)} %"
        lines.append(line)
    for run in report.unfinished:
        lines.append(f"{run.run_folder:>6}  {run.results_file}  not finished ({run.progress}), not counted")
    lines.append(f"runs: {len(report.runs)}")
    summaries = [("accuracy", report.accuracy), ("error", report.error)]
    if report.minority:
        summaries += [("minority accuracy", report.minority_accuracy),
                      ("minority error", report.minority_error)]
    for label, summary in summaries:
        lines.append(f"{label + ':':<19} mean {decimal_text(summary.mean)} %  std {_std_text(summary)}")
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
            + numbers(*[decimal_text(value) for value in (run.acc, run.error, run.minority_acc,
                                                      run.minority_error)])
            for run in report.runs]
    rows += [[run.run_folder, "not finished", run.progress, str(run.results_file)] + numbers("", "")
             for run in report.unfinished]
    summaries = (report.accuracy, report.error, report.minority_accuracy, report.minority_error)
    for label, pick in (("n", lambda s: str(s.n)), ("mean", lambda s: decimal_text(s.mean)),
                        ("std", lambda s: decimal_text(s.std))):
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
