"""The table of custom_reports/tables.py as text, Markdown, CSV or JSON; the grid and
Markdown rendering that the one-configuration report shares."""
import csv
import io
import json
from typing import List, Optional, Sequence, Tuple

from custom_reports.run_reading import METRIC_LABELS, METRICS
from custom_reports.statistics import MISSING, PairedDifference, decimal_text, json_number
from custom_reports.tables import Cell, Table

FORMATS = ("text", "markdown", "csv", "json")


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


def render_grid(header: List[str], rows: List[List[str]], fmt: str) -> str:
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
                    cells += [decimal_text(summary.mean, 4), decimal_text(summary.std, 4), str(summary.n)]
                else:
                    cells += ["", "", "0"]
            if table.with_paper:
                mean, std = cell.paper if cell.paper is not None else ("", "")
                cells += [str(mean), "" if std is None else str(std)]
            if table.versus:
                cells += [""] * len(versus) if cell.versus is None else _paired_csv(cell.versus)
        rows.append(cells)
    return render_grid(header, rows, "csv")


def _paired_csv(paired: PairedDifference) -> List[str]:
    """mean, low, high, n, wins, verdict; an undefined interval (one run) is empty, not nan."""
    low, high = paired.interval
    bounds = ["", ""] if paired.n < 2 else [decimal_text(low, 4), decimal_text(high, 4)]
    return [decimal_text(paired.mean, 4), *bounds, str(paired.n), str(paired.wins), paired.verdict]


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
    body = render_grid(*_table_grid(table), fmt)
    if fmt == "markdown":
        return markdown_text(table.caption(), body, table.notes)
    return "\n".join([table.caption(), body] + [f"note: {note}" for note in table.notes])


def markdown_text(caption: str, body: str, notes: Sequence[str]) -> str:
    """A bold caption, the table, and the notes below it."""
    notes = [f"note: {note}" for note in notes]
    return "\n".join([f"**{caption}**", "", body] + ([""] + notes if notes else []))
