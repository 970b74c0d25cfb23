"""The FashionMNIST table of docs/results.md is what get-results.py makes of the results files
committed under docs/evidence/ (the runs behind it): a reader can regenerate every cell, and
another machine can continue the table, because the runner counts those files as finished
cells. The README's summary of that table quotes its means."""
import re
import shutil
from pathlib import Path

from custom_reports import statistics
from custom_reports.tables import build_table
from custom_runs import run_files
from custom_runs.table import sweep

ROOT = Path(__file__).resolve().parents[1]
EVIDENCE = ROOT / "docs" / "evidence"
PAGE = ROOT / "docs" / "results.md"
README = ROOT / "README.md"
CONFIGS = ["Baseline", "FAA", "A", "A_W", "A_W_S"]
# the runner's command of the table (docs/results.md#fashionmnist), less --data and --runs
OPTIONS = ["-sr", "0.2", "--epochs", "50", "--no-cuda"]
# the page's columns: (metric, minority) of get-results.py --table
COLUMNS = [("best", False), ("best", True), ("last", False)]


def page_table():
    """{method: [cell text of each column]} of the table under '## FashionMNIST'."""
    section = PAGE.read_text().split("\n## FashionMNIST\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip().strip("*") for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in CONFIGS:
            rows[cells[0]] = cells[1:]
    return rows


def committed_files():
    return sorted(EVIDENCE.glob("FashionMNIST/run*/results_*.json"))


def test_the_committed_runs_are_finished_cells_of_the_pages_table():
    files = committed_files()
    assert files, "docs/evidence/FashionMNIST/run*/ holds no results file"
    splits = {}
    for path in files:
        results = run_files.load_results(path)
        config = results["config"]
        assert results["status"] == "finished" and results["epochs_done"] == 50, path
        assert (config["imbalance_ratio"], config["noise_ratio"], config["subsample_ratio"]) == (20, 0.2, 0.2)
        assert results["versions"]["commit"] != "unknown" and not results["versions"]["uncommitted_changes"]
        # the configurations of a run folder share its split (the page describes run0's)
        splits.setdefault(path.parent.name, []).append(results["split"])
    assert all(split == folder[0] for folder in splits.values() for split in folder)
    assert (splits["run0"][0]["train_size"], splits["run0"][0]["noisy_labels"]) == (5259, 942)


def test_every_cell_of_the_pages_table_is_what_get_results_makes_of_the_committed_runs():
    page = page_table()
    assert set(page) == set(CONFIGS)
    for column, (metric, minority) in enumerate(COLUMNS):
        table = build_table(str(EVIDENCE), "FashionMNIST", "resnet18", metric=metric,
                            minority=minority)
        assert table.columns == ["20-0.2 sr 0.2"]
        cells = {row.name: row.cells["20-0.2 sr 0.2"].summary.text() for row in table.rows}
        assert {name: page[name][column] for name in CONFIGS} == cells, (metric, minority)


def test_the_runner_continues_the_table_from_the_committed_runs(tmp_path):
    """Copied into a data folder, the committed runs are skipped and only the others train."""
    shutil.copytree(EVIDENCE / "FashionMNIST", tmp_path / "FashionMNIST",
                    ignore=shutil.ignore_patterns("*.md"))
    specs = sweep.expand("FashionMNIST", str(tmp_path), CONFIGS, ["20-0.2"], 3, OPTIONS)
    finished = {spec.results_path.relative_to(tmp_path) for spec in specs if spec.is_finished()}
    assert len(specs) == 15
    assert finished == {path.relative_to(EVIDENCE) for path in committed_files()}



def test_the_readmes_fashionmnist_figures_are_the_pages_means_rounded():
    """The README's paragraph quotes the page's best-epoch means (one decimal) and the
    Baseline's and A_W_S's minority-class means: a regenerated table must update both."""
    paragraph = README.read_text().split("**Beyond DIGITS**", 1)[1].split("\n\n", 1)[0]
    paragraph = " ".join(paragraph.split())
    quoted = {name: float(error) for error, name in re.findall(r"([\d.]+) % for (?:the )?(\w+)", paragraph)}
    rare = re.search(r"rare classes ([\d.]+) % against ([\d.]+) %", paragraph)
    mean = lambda cell: round(float(cell.split(" ± ")[0]), 1)  # noqa: E731
    page = page_table()
    assert quoted == {name: mean(page[name][0]) for name in CONFIGS}
    assert rare and (float(rare.group(1)), float(rare.group(2))) == (mean(page["Baseline"][1]),
                                                                     mean(page["A_W_S"][1]))


def test_the_pages_hyper_epochs_are_those_of_the_committed_runs():
    """Hyper steps run on the epochs e > hyper_start (counted from 0, as in the files)."""
    section = PAGE.read_text().split("\n## FashionMNIST\n", 1)[1].split("\n## ", 1)[0]
    section = " ".join(section.split())
    starts = {run_files.load_results(path)["config"]["hyper_start"] for path in committed_files()
              if "_opt_HES_" in path.name}
    assert len(starts) == 1
    start = starts.pop()
    assert f"`hyper_start` {start} in the results files: hyper steps on epochs {start + 1}–49 " \
           f"counted from 0, printed {start + 2}–50" in section


def test_every_paired_difference_on_the_page_is_what_get_results_makes_of_the_committed_runs():
    """The page's table of paired differences (row minus reference in the same run folder)
    is get-results.py --table --versus REF [--minority | --metric last] on the committed runs."""
    section = PAGE.read_text().split("\n## FashionMNIST\n", 1)[1].split("\n## ", 1)[0]
    steps = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and " − " in cells[0]:
            steps[tuple(cells[0].split(" − "))] = cells[1:]
    assert set(steps) == {("FAA", "Baseline"), ("A", "FAA"), ("A_W", "A"), ("A_W_S", "A_W"),
                          ("A_W_S", "Baseline")}
    for column, (metric, minority) in enumerate(COLUMNS):
        for (row, reference), page_cells in steps.items():
            table = build_table(str(EVIDENCE), "FashionMNIST", "resnet18", metric=metric,
                                minority=minority, versus=reference)
            cell = next(r for r in table.rows if r.name == row).cells["20-0.2 sr 0.2"]
            assert cell.versus.text() == page_cells[column], (row, reference, metric, minority)


DIGITS_CONFIGS = ["Baseline", "RAA", "FAA", "DADA", "A_SHA", "A", "A_W", "A_W_S"]


def readme_digits_tables():
    """{(IR, NR): {method: [cells]}} of the README's DIGITS tables, one per '#### IR i, NR n'."""
    section = README.read_text().split("\n## Headline result: DIGITS", 1)[1].split("\n## ", 1)[0]
    tables = {}
    for part in section.split("\n#### ")[1:]:
        match = re.match(r"IR (\d+), NR ([\d.]+)", part)
        rows = {}
        for line in part.splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if line.startswith("| ") and cells[0] in DIGITS_CONFIGS:
                rows[cells[0]] = cells[1:]
        tables[(int(match.group(1)), float(match.group(2)))] = rows
    return tables


def test_every_cell_of_the_readmes_digits_grid_is_what_get_results_makes_of_the_committed_runs():
    """Each README table: error at the test-selected, validation-selected and last epoch, and
    the validation-selected error's paired difference against the Baseline, exactly as
    get-results.py --data docs/evidence --dataset DIGITS --table --metric valid --settings IR-NR
    prints them from the committed results files."""
    tables = readme_digits_tables()
    # the paper's 2 x 2 grid: balanced or imbalanced, clean or noisy
    assert set(tables) == {(10, 0.1), (1, 0.1), (10, 0.0), (1, 0.0)}
    assert all(set(rows) == set(DIGITS_CONFIGS) for rows in tables.values())
    for (imbalance, noise), rows in tables.items():
        table = build_table(str(EVIDENCE), "DIGITS", "resnet18", metric="valid",
                            only_settings=[(imbalance, noise)])
        column = f"{imbalance}-{noise}"
        assert table.columns == [column]
        made = {}
        for row in table.rows:
            cell = row.cells[column]
            made[row.name] = [cell.summary_of(metric).text() for metric in ("best", "valid", "last")] + \
                [statistics.MISSING if cell.versus is None else cell.versus.text()]
        assert made == rows, (imbalance, noise)


def test_the_committed_digits_runs_are_finished_100_epoch_runs_of_one_clean_commit():
    files = sorted(EVIDENCE.glob("DIGITS/run*/results_*.json"))
    assert len(files) == 4 * 8 * 3  # four settings, eight configurations, three runs
    commits = set()
    for path in files:
        results = run_files.load_results(path)
        assert results["status"] == "finished" and results["epochs_done"] == 100, path
        assert results["best_valid"]["epoch"] >= 0, path
        for attempt in results["attempts"]:
            assert attempt["commit"] != "unknown" and not attempt["uncommitted_changes"], path
            commits.add(attempt["commit"])
    assert len(commits) == 1


def test_the_digits_steps_on_the_results_page_are_what_get_results_makes_of_the_committed_runs():
    section = PAGE.read_text().split("\n## DIGITS: the headline table\n", 1)[1].split("\n## ", 1)[0]
    steps = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and " − " in cells[0]:
            steps[tuple(cells[0].split(" − "))] = cells[1]
    assert len(steps) >= 5
    for (row, reference), page_cell in steps.items():
        table = build_table(str(EVIDENCE), "DIGITS", "resnet18", metric="valid",
                            versus=reference, only_settings=[(10, 0.1)])
        cell = next(r for r in table.rows if r.name == row).cells["10-0.1"]
        assert cell.versus.text() == page_cell, (row, reference)


def test_the_label_error_tables_on_the_page_are_the_committed_report():
    report = (EVIDENCE / "label-errors" / "label_errors.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ") and "%" in line]
    page = (ROOT / "docs" / "own-data.md").read_text()
    assert len(rows) >= 20
    assert [row for row in rows if row not in page] == []
