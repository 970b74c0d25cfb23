#!/usr/bin/env python3
"""Label-error benchmark: how well each score ranks the truly wrong train labels.

    python bench/label_errors.py --out /tmp/label_errors --noise 0.2 0.4 --seeds 1 2 3 4 5

For each seed, FashionMNIST (or another in-memory benchmark) is exported once as a clean,
class-balanced folder drawn with that seed (custom_datasets/export_folder.py); noise is
injected by the runs' -nr in run folder run{seed}, whose split file holds the noisy labels,
so the truth is known. At each seed and noise level every method ranks the SAME noisy labels:

  full runs on the folder, -nr NR:  BOTH (--los-model BOTH --hyper-opt HES), Baseline,
                                    WGHT (--los-model WGHT --hyper-opt HES); --full-runs
  K folds (cross-validation):       a folder per fold whose train/ is the other folds' images
                                    filed under their NOISY labels (read from the split file),
                                    with the export's own valid/ and test/; a Baseline run on
                                    each with -nr 0; its network predicts the held-out fold
                                    (out-of-sample probabilities), which cleanlab ranks
                                    (confident learning).

No arm picks an epoch on the test labels: every network is read at its bestvalid_ checkpoint
(best accuracy on the clean valid/ images, which the fold Baselines see as the full runs do)
and at its last_ one. Scores (higher = more suspect): AutoDO's trust (WGHT: w, BOTH: w*q[y])
and the trust divided by the median trust of its given class, the networks' self-confidence
p[y] and normalised margin p[y] - max_{k!=y} p[k], trust x self-confidence, cleanlab's
label-quality scores of the out-of-sample probabilities, and cleanlab.filter.find_label_issues
(a set, scored at its own size).

For each: precision@K and recall@K for K = the number of truly flipped labels, 50 and 100,
and the AUROC; over the seeds their mean and sd. The default ranking of get-results.py
--suspects (the BOTH network's self-confidence) is compared with cleanlab's self-confidence
on the out-of-sample probabilities, checkpoint kind by checkpoint kind: per seed the
difference with a paired bootstrap interval over the images, over the seeds a Student-t
interval of the per-seed differences. Each arm's cost: its runs' training minutes (their
results' timings_s.total) and its scoring seconds. One Markdown report is printed and written
with a JSON beside it (--out). Finished runs are reused (a rerun only reports); an interrupted
one is continued (--resume). cleanlab is needed only here: pip install cleanlab
(requirements-dev.txt).
"""
import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, Optional

import numpy as np

from bench.label_errors_arms import (FULL_RUNS, Job, export_dir, finished_results, level_key, plan,
                                     run_jobs, run_paths, split_of)
from bench.label_errors_report import markdown_table
from bench.label_errors_scores import (CHECKPOINT_KINDS, PAIRED_METRICS, BenchError, cleanlab_ranking,
                                       normalised_margin, paired_bootstrap, per_class_normalised,
                                       ranking_metrics, self_confidence, self_confidence_ranking,
                                       set_metrics, summarise)
from custom_common.signals import sigterm_as_interrupt


# ----------------------------------------------------------------------------- scoring

def network_probs(checkpoint_path: Path, model: str, settings, images, device) -> np.ndarray:
    import torch
    from custom_runs import run_files
    from custom_reports.suspects import network_probabilities
    checkpoint = run_files.load_torch(checkpoint_path)
    data = SimpleNamespace(train_images=images)
    return network_probabilities(checkpoint, model, settings, data, torch.arange(len(images)),
                                 device, path=checkpoint_path).double().numpy()


def score_level(args, seed: int, noise: float, jobs: Dict[str, Job], device) -> Optional[Dict]:
    """Every ranking of one seed and noise level that its finished runs allow, the paired
    comparison of the default ranking with cleanlab's, and each arm's cost."""
    import torch
    import torch.nn.functional as F
    from custom_datasets.folder import folder_settings
    from custom_datasets.sources import load_data
    from custom_runs import run_files
    split = split_of(args, seed, noise)
    if split is None:
        return None
    train, noisy = split
    key, data_dir = level_key(seed, noise), export_dir(args, seed)
    settings = folder_settings(data_dir)
    data = load_data(settings, args.runs_root)
    given = noisy[train]
    true = data.train_targets.numpy()[train]
    flipped = given != true
    images = data.train_images[torch.as_tensor(train)]
    methods, missing, suspicions, costs = [], [], {}, {}

    def add(name, suspicion, runs):
        suspicions[name] = suspicion
        methods.append({"name": name, "runs": runs, "metrics": ranking_metrics(suspicion, flipped)})

    full = {}
    for name in (name for name in FULL_RUNS if name in args.full_runs):
        job = jobs[f"{key}/{name}"]
        results = finished_results(args.runs_root, job, args.epochs)
        if results is None:
            missing.append(job.key)
            continue
        folder, run_name, _ = run_paths(args.runs_root, data_dir, job.run_folder, job.los_model,
                                        job.hyper_opt, noise)
        entry, scoring_s = {}, 0.0
        for kind in CHECKPOINT_KINDS:
            started = time.perf_counter()
            entry[kind] = network_probs(run_files.checkpoint_path(folder, run_name, kind),
                                        settings.model, settings, images, device)
            if kind == "valid":
                scoring_s = time.perf_counter() - started
        costs[name] = {"runs": 1, "train_minutes": results["timings_s"]["total"] / 60,
                       "scoring_s": scoring_s}
        tables = run_files.load_torch(run_files.last_checkpoint_path(folder, run_name)) \
            .get("reweight_state_dict", {})
        if name != "Baseline":
            weights = (F.softplus(tables["weight_logits"].float()) / np.log(2.0)).numpy()[train]
            soft = F.softmax(tables["soft_logits"].float(), -1).numpy()[train]
            soft_given = soft[np.arange(len(train)), given]
            entry["trust"] = weights if name == "WGHT" else weights * soft_given
        full[name] = entry
    for name in ("WGHT", "BOTH"):
        if name not in full:
            continue
        entry, what = full[name], "w" if name == "WGHT" else "w·q[y]"
        add(f"AutoDO trust ({name} run, {what}, last)", -entry["trust"], 1)
        add(f"AutoDO trust / class median ({name} run, last)",
            -per_class_normalised(entry["trust"], given), 1)
    for name in ("BOTH", "WGHT", "Baseline"):
        if name not in full:
            continue
        entry = full[name]
        for kind in CHECKPOINT_KINDS:
            add(self_confidence_ranking(name, kind), -self_confidence(entry[kind], given), 1)
        add(f"normalised margin, {name} network (valid)", -normalised_margin(entry["valid"], given), 1)
    if "BOTH" in full:
        entry = full["BOTH"]
        add("trust × self-confidence (BOTH run, valid)",
            -(entry["trust"] * self_confidence(entry["valid"], given)), 1)
    level = {"seed": seed, "noise_ratio": noise, "train": int(len(train)), "flipped": int(flipped.sum()),
             "methods": methods, "missing_runs": missing, "costs": costs}
    level.update(score_folds(args, seed, noise, jobs, given, flipped, images, device, add, missing, costs))
    level["paired"] = {}
    for kind in CHECKPOINT_KINDS:
        default, cleanlab = self_confidence_ranking("BOTH", kind), cleanlab_ranking(args.folds, kind)
        if default in suspicions and cleanlab in suspicions:
            level["paired"][kind] = {
                metric: paired_bootstrap(suspicions[default], suspicions[cleanlab], flipped, metric,
                                         args.resamples)
                for metric in PAIRED_METRICS}
    return level


def flag_label_issues(given: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """cleanlab.filter.find_label_issues in this process. By default it forks a pool whose
    workers inherit this script's SIGTERM handler; the pool's terminate() then raises in a
    worker that may hold the task queue's lock, and the pool waits for it forever."""
    from cleanlab.filter import find_label_issues
    return find_label_issues(given, probabilities, n_jobs=1)


def score_folds(args, seed, noise, jobs, given, flipped, images, device, add, missing, costs) -> Dict:
    """cleanlab on the out-of-sample probabilities of the K fold Baselines."""
    from custom_runs import run_files
    if not args.folds:
        return {}
    minutes, scoring_s, complete = 0.0, 0.0, True
    probabilities = {}
    for k in range(args.folds):
        job = jobs[f"{level_key(seed, noise)}/fold{k}"]
        results = finished_results(args.runs_root, job, args.epochs)
        if results is None:
            missing.append(job.key)
            complete = False
            continue
        held_out = np.array(json.loads((job.data_dir / "fold.json").read_text())["held_out_positions"])
        folder, run_name, settings = run_paths(args.runs_root, job.data_dir, job.run_folder,
                                               "NONE", "NONE", 0.0)
        minutes += results["timings_s"]["total"] / 60
        for kind in CHECKPOINT_KINDS:
            started = time.perf_counter()
            if kind not in probabilities:
                probabilities[kind] = np.full((len(given), len(settings.classes)), np.nan)
            probabilities[kind][held_out] = network_probs(run_files.checkpoint_path(folder, run_name, kind),
                                                          settings.model, settings,
                                                          images[held_out], device)
            if kind == "valid":
                scoring_s += time.perf_counter() - started
    if not complete:
        return {}
    for kind in CHECKPOINT_KINDS:
        if np.isnan(probabilities[kind]).any():
            raise BenchError(f"seed {seed}, noise {noise}: the folds do not cover every train image")
    from cleanlab.rank import get_label_quality_scores
    for kind in CHECKPOINT_KINDS:
        for method in ("self_confidence", "normalized_margin"):
            started = time.perf_counter()
            quality = get_label_quality_scores(given, probabilities[kind], method=method)
            if kind == "valid" and method == "self_confidence":
                scoring_s += time.perf_counter() - started
            add(cleanlab_ranking(args.folds, kind, method), -quality, args.folds)
    costs["folds"] = {"runs": args.folds, "train_minutes": minutes, "scoring_s": scoring_s}
    flagged = flag_label_issues(given, probabilities["valid"])
    entry = {"name": f"default (prune_by_noise_rate), {args.folds}-fold Baselines (valid)"}
    entry.update(set_metrics(flagged, flipped))
    return {"find_label_issues": entry}


# ----------------------------------------------------------------------------- main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--out", type=Path, required=True,
        help="working folder: the exports, the runs, the fold folders, logs, table (reused)")
    add("--dataset", default="FashionMNIST", help="in-memory benchmark to export (default: FashionMNIST)")
    add("--source-data", default="./local_data", help="its files (default: ./local_data)")
    add("--noise", type=float, nargs="+", default=[0.2, 0.4], help="-nr levels (default: 0.2 0.4)")
    add("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5],
        help="one export, noise draw (run folder runN) and fold split per seed (default: 1 2 3 4 5)")
    add("--full-runs", nargs="+", choices=tuple(FULL_RUNS), default=list(FULL_RUNS),
        help="full runs to train and rank (default: Baseline WGHT BOTH); the default ranking "
             "against cleanlab needs BOTH")
    add("--epochs", type=int, default=50, help="epochs of every run (default: 50)")
    add("--folds", type=int, default=4, help="K of the cross-validation; 0: none (default: 4)")
    add("--train-per-class", type=int, default=200, help="(default: 200)")
    add("--valid-per-class", type=int, default=30, help="(default: 30)")
    add("--test-per-class", type=int, default=100, help="(default: 100)")
    add("--resamples", type=int, default=2000,
        help="paired bootstrap resamples of the images (default: 2000)")
    add("--parallel", type=int, default=2, help="runs at a time (default: 2)")
    add("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run (default: 1)")
    add("--nice", type=int, default=10, help="niceness of the runs (default: 10)")
    add("--no-cuda", action="store_true", help="train and predict on the CPU")
    add("--report-only", action="store_true", help="train nothing: the table of the finished runs")
    args = parser.parse_args(argv)
    checks = [(args.epochs >= 1, "--epochs must be >= 1"), (args.folds == 0 or args.folds >= 2,
              "--folds must be 0 or >= 2"), (args.parallel >= 1, "--parallel must be >= 1"),
              (args.threads >= 1, "--threads must be >= 1"),
              (args.resamples >= 1, "--resamples must be >= 1"),
              (all(seed >= 0 for seed in args.seeds), "--seeds must be >= 0"),
              (all(0 < n < 1 for n in args.noise), "--noise levels must be in (0, 1)")]
    for ok, message in checks:
        if not ok:
            parser.exit(2, f"label_errors.py: error: {message}\n")
    args.seeds = list(dict.fromkeys(args.seeds))
    return args


def export_seeds(args) -> int:
    """Each seed's clean folder (once): the class-balanced subset drawn with that seed."""
    from custom_datasets import export_folder
    for seed in args.seeds:
        if export_dir(args, seed).is_dir():
            continue
        code = export_folder.main(["--dataset", args.dataset, "--data", args.source_data, "--out",
                                   str(export_dir(args, seed)), "--train-per-class",
                                   str(args.train_per_class), "--valid-per-class",
                                   str(args.valid_per_class), "--test-per-class",
                                   str(args.test_per_class), "--seed", str(seed)])
        if code:
            return code
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.folds:
        try:
            import cleanlab  # noqa: F401
        except ImportError:
            print("label_errors.py: error: the K-fold rankings need cleanlab: pip install cleanlab "
                  "(see requirements-dev.txt), or --folds 0", file=sys.stderr)
            return 1
    args.out = args.out.resolve()
    args.runs_root = args.out / "runs"
    code = export_seeds(args)
    if code:
        return code
    jobs = plan(args)
    failed = [] if args.report_only else run_jobs(args, jobs)
    for job in failed:
        print(f"{job.key}: {job.status}; see {job.log}" if job.log else f"{job.key}: {job.status}",
              file=sys.stderr)
    import torch
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    by_key = {job.key: job for job in jobs}
    levels = []
    for noise in args.noise:
        for seed in args.seeds:
            level = score_level(args, seed, noise, by_key, device)
            if level is None:
                continue
            if level["missing_runs"]:
                print(f"seed {seed}, noise {noise:.0%}: not finished, so not in the table: "
                      f"{', '.join(level['missing_runs'])}", file=sys.stderr)
            if level["paired"] or not level["missing_runs"]:
                levels.append(level)
    summary = summarise(levels)
    table = markdown_table(summary, args.folds)
    print(table)
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else list(argv))),
              "dataset": args.dataset, "epochs": args.epochs, "folds": args.folds,
              "train_per_class": args.train_per_class, "valid_per_class": args.valid_per_class,
              "test_per_class": args.test_per_class, "seeds": args.seeds, "full_runs": args.full_runs,
              "resamples": args.resamples, "summary": summary, "levels": levels}
    from custom_runs import run_files
    run_files.save_json(record, args.out / "label_errors.json")
    with run_files.atomic_path(args.out / "label_errors.md") as tmp:
        Path(tmp).write_text(table + "\n")
    print(f"wrote {args.out / 'label_errors.json'}, {args.out / 'label_errors.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        with sigterm_as_interrupt(KeyboardInterrupt):  # `kill`: stop the runs too
            sys.exit(main())
    except BenchError as error:
        print(f"label_errors.py: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("label_errors.py: interrupted; the same command continues the unfinished runs",
              file=sys.stderr)
        sys.exit(130)
