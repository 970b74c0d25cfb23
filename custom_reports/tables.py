"""The paper's table of every configuration found for a dataset: one row per method (and
network, ablation, --paper-text and --policy-variant items, run length), one column per
IR-NR setting, cells of the error over run folders at the three epoch selections, beside
the paper's numbers where asked, each row compared with a reference row run folder by
run folder (paired: the configurations of a run folder share its split and noise draw)."""
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from custom_datasets.folder import FOLDER_DATASET
from custom_runs import run_files
from custom_runs.identity import Configuration, command_line, load_paper_results, paper_methods
from custom_runs.options import PAPER_TEXT_ITEMS, POLICY_VARIANT_ITEMS
from custom_reports.run_reading import (METRIC_LABELS, METRICS, ReportError, is_finished,
                                        length_text, metric_entry, code_of, different_code_note,
                                        method_label, mixed_attempts, read_results, run_length,
                                        untested_classes, untested_text)
from custom_reports.statistics import MISSING, PairedDifference, Summary, paired_difference, summarize

REFERENCE = "Baseline"  # the row every other row is compared with, unless --versus says another


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
            sections = {name: metric_entry(results, name, path) for name in METRICS} \
                if is_finished(results) else None
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
            name += f" ({length_text(length)})" if split else ""
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
