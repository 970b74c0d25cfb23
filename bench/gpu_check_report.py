"""The figures of bench/gpu_check.py: what its steps' outputs and results files say, read
back as numbers, and the summary table of all steps. Nothing here runs a command, so each
part can be checked on canned outputs (tests/test_gpu_check.py)."""
import json
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence


def last_json_line(text: str) -> Optional[dict]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def pytest_counts(text: str) -> Dict[str, int]:
    """pytest's last line, "3 passed, 1 skipped, 2 deselected in 4.20s", as numbers."""
    lines = [line for line in text.strip().splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    if not lines:
        return {}
    return {word: int(count) for count, word in
            re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected)", lines[-1])}


def throughput_figures(report: dict) -> str:
    hyper = report.get("hyper_step_s")
    parts = [f"train step {1000 * report['train_step_s']:.1f} ms"]
    if hyper:
        parts.append(f"hyper step {1000 * hyper:.1f} ms ({report['hyper_to_train_ratio']:.2f}x)")
    parts += [f"{report['train_images_per_s']:,.0f} img/s",
              f"test pass {report['test_pass_s']:.2f} s",
              f"full run {report['projected_200_epoch_s'] / 60:.1f} min projected",
              f"{report['peak_memory_mb'] / 1024:.1f} GiB"]
    return ", ".join(parts)


def results_file(data: Path, dataset: str = "DIGITS", run_folder: str = "run0") -> Path:
    found = sorted((data / dataset / run_folder).glob("results_*.json"))
    if len(found) != 1:
        raise FileNotFoundError(f"{len(found)} results files in {data / dataset / run_folder}")
    return found[0]


def compared_numbers(results: dict) -> Dict[str, float]:
    """The numbers of a results file that depend on the training (not on the clock)."""
    numbers = {}
    for entry in results["history"]:
        for key in ("test_acc", "test_loss", "train_loss"):
            numbers[f"epoch {entry['epoch']} {key}"] = entry[key]
    for entry in results["hyper_diagnostics"]:
        for key in ("g_norm_sq", "v_norm_sq", "g_dot_v"):
            numbers[f"epoch {entry['epoch']} {key}"] = entry[key]
    for key, value in results["learned"].items():
        if value is not None:
            numbers[f"learned {key}"] = value
    numbers["final acc"] = results["final"]["acc"]
    return numbers


def largest_difference(one: dict, other: dict) -> (float, str):
    """The largest relative difference between two results files' numbers, and where."""
    a, b = compared_numbers(one), compared_numbers(other)
    if a.keys() != b.keys():
        return float("inf"), f"different entries: {sorted(a.keys() ^ b.keys())[:3]}"
    worst, where = 0.0, ""
    for key in a:
        difference = abs(a[key] - b[key]) / max(abs(a[key]), abs(b[key]), 1e-12)
        if difference > worst:
            worst, where = difference, key
    return worst, where


def capacity_row(k: int, wall_s: float, results: List[dict]) -> dict:
    """Figures of K runs at once from their results files: the mean epoch of a run (its
    training time, without the start of the process), and what all K do together."""
    epoch_s = sum(result["timings_s"]["total"] / result["epochs_done"] for result in results) / k
    train_size = sum(result["split"]["train_size"] for result in results) / k
    return {"runs": k, "wall_s": wall_s, "epoch_s": epoch_s, "epochs_per_min": 60 * k / epoch_s,
            "train_images_per_s": k * train_size / epoch_s}


def capacity_figures(rows: List[dict]) -> str:
    best = max(rows, key=lambda row: row["epochs_per_min"])
    cells = [f"{row['runs']}: {row['epochs_per_min']:.1f} epochs/min ({row['epoch_s']:.1f} s an epoch)"
             for row in rows]
    return "; ".join(cells) + f"; most at {best['runs']} at once"


def summary_table(rows: Sequence[tuple]) -> str:
    """(step, what, Outcome) rows as a Markdown table."""
    lines = ["| step | what | status | s | figures |", "| --- | --- | --- | ---: | --- |"]
    for name, what, outcome in rows:
        lines.append(f"| {name} | {what} | {outcome.status} | {outcome.seconds:.0f} | {outcome.figures} |")
    return "\n".join(lines)


def write_summary(rows: Sequence[tuple], out: Path) -> None:
    (out / "summary.md").write_text(summary_table(rows) + "\n")
    (out / "summary.json").write_text(json.dumps(
        [{"step": name, "what": what, "status": outcome.status, "seconds": outcome.seconds,
          "figures": outcome.figures, "details": outcome.details} for name, what, outcome in rows],
        indent=1, default=str) + "\n")
