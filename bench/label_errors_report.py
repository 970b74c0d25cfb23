"""The Markdown report of bench/label_errors.py: the rankings over seeds, the paired
comparison of the default ranking with cleanlab's, the arms' cost and find_label_issues."""
from typing import Dict

from bench.label_errors_scores import cleanlab_ranking, self_confidence_ranking


def fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def fmt_mean_sd(interval: Dict) -> str:
    if interval["mean"] is None:
        return "–"
    return fmt(interval["mean"]) + ("" if interval["sd"] is None else f" ± {interval['sd']:.3f}")


def fmt_interval(low, high) -> str:
    return "–" if low is None else f"[{low:+.3f}, {high:+.3f}]"


ARMS = {"BOTH": "AutoDO BOTH run", "WGHT": "AutoDO WGHT run", "Baseline": "Baseline run",
        "folds": "K-fold Baselines + cleanlab"}


def markdown_table(summary: Dict[str, Dict], folds: int) -> str:
    """The rankings (mean ± sd over seeds), the paired comparison of the default ranking with
    cleanlab's, the arms' cost and find_label_issues."""
    lines = ["| noise | seeds | flipped / train | ranking | runs | P@flipped | P@50 | P@100 | AUROC |",
             "|---|---|---|---|---|---|---|---|---|"]
    for noise, level in summary.items():
        flipped = "–".join(str(n) for n in sorted({min(level["flipped"]), max(level["flipped"])}))
        for entry in level["rankings"]:
            lines.append(f"| {noise} | {entry['seeds']} | {flipped} / {level['train']} | {entry['name']} | "
                         f"{entry['runs']} | {fmt_mean_sd(entry['precision@n'])} | "
                         f"{fmt_mean_sd(entry['precision@50'])} | {fmt_mean_sd(entry['precision@100'])} | "
                         f"{fmt_mean_sd(entry['auroc'])} |")
    paired = [(noise, kind, metric, entry) for noise, level in summary.items()
              for kind, metrics in level["paired"].items() for metric, entry in metrics.items()]
    if paired:
        lines += ["", f"Default ranking ({self_confidence_ranking('BOTH', 'kind')}) minus "
                  f"{cleanlab_ranking(folds, 'kind')}, both at the same checkpoint kind:", "",
                  "| noise | checkpoint | metric | per seed: difference [95 % paired bootstrap] | "
                  "mean | 95 % t interval over seeds | reading |", "|---|---|---|---|---|---|---|"]
        for noise, kind, metric, entry in paired:
            per_seed = "; ".join(f"{p['seed']}: {p['difference']:+.3f} {fmt_interval(p['low'], p['high'])}"
                                 for p in entry["per_seed"])
            name = "AUROC" if metric == "auroc" else "P@flipped"
            lines.append(f"| {noise} | {kind} | {name} | {per_seed} | {entry['mean']:+.3f} | "
                         f"{fmt_interval(entry['low'], entry['high'])} | {entry['reading'] or '–'} |")
    costs = [(noise, arm, entry) for noise, level in summary.items() for arm, entry in level["costs"].items()]
    if costs:
        lines += ["", "| noise | arm | runs | training minutes per seed (mean) | "
                  "scoring seconds per seed (mean, valid) |", "|---|---|---|---|---|"]
        for noise, arm, entry in costs:
            lines.append(f"| {noise} | {ARMS[arm]} | {entry['runs']} | {entry['train_minutes']:.1f} | "
                         f"{entry['scoring_s']:.1f} |")
        for noise, level in summary.items():
            ratios = level["folds_to_both_minutes"]
            if ratios:
                ratio = level["costs"]["folds"]["train_minutes"] / level["costs"]["BOTH"]["train_minutes"]
                lines.append(f"\n{noise}: the K-fold Baselines train {ratio:.2f}× the minutes of the BOTH "
                             f"run (seed by seed {min(ratios):.2f}–{max(ratios):.2f}×).")
    sets = [(noise, level["find_label_issues"]) for noise, level in summary.items()
            if level["find_label_issues"]]
    if sets:
        lines += ["", f"| noise | cleanlab.filter.find_label_issues, {folds}-fold Baselines (valid) | "
                  "flagged | precision | recall |", "|---|---|---|---|---|"]
        for noise, entry in sets:
            lines.append(f"| {noise} | default (prune_by_noise_rate), mean over seeds | "
                         f"{entry['flagged']:.1f} | {fmt(entry['precision'])} | {fmt(entry['recall'])} |")
    return "\n".join(lines)
