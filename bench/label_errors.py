#!/usr/bin/env python3
"""Label-error benchmark: how well each score ranks the truly wrong train labels.

    python bench/label_errors.py --out /tmp/label_errors --noise 0.2 0.4

FashionMNIST (or another in-memory benchmark) is exported once as a clean folder
(custom_datasets/export_folder.py); noise is injected by the runs' -nr, whose split file
(run0, seed 0) holds the noisy labels, so the truth is known. At each noise level every
method ranks the SAME noisy labels:

  full runs on the folder, -nr NR:  Baseline, WGHT (--los-model WGHT --hyper-opt HES),
                                    BOTH (--los-model BOTH --hyper-opt HES)
  K folds (cross-validation):       a folder per fold whose train/ is the other folds'
                                    images filed under their NOISY labels (read from the
                                    split file), with the same valid/ and test/; a Baseline
                                    run on each with -nr 0; its network predicts the
                                    held-out fold (out-of-sample probabilities), which
                                    cleanlab ranks (confident learning).

Scores (higher = more suspect): AutoDO's trust (WGHT: w, BOTH: w*q[y]), the trust
divided by the median trust of its given class, the networks' self-confidence p[y] and
normalised margin p[y] - max_{k!=y} p[k] (best_ and last_ checkpoints), trust x
self-confidence, cleanlab's label-quality scores of the out-of-sample probabilities, and
cleanlab.filter.find_label_issues (a set, scored at its own size).

For each: precision@K and recall@K for K = the number of truly flipped labels, 50 and
100, AUROC (sklearn.metrics.roc_auc_score), and the cost in training runs. One Markdown
table is printed and written with a JSON beside it (--out). Finished runs are reused
(a rerun only reports); an interrupted one is continued (--resume). cleanlab is needed
only here: pip install cleanlab (requirements-dev.txt).
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]

RUN_FOLDER = "run0"
FULL_RUNS = {"Baseline": ("NONE", "NONE"), "WGHT": ("WGHT", "HES"), "BOTH": ("BOTH", "HES")}
TOP_KS = (50, 100)


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why."""


# ----------------------------------------------------------------------------- metrics

def ranking_metrics(suspicion: np.ndarray, flipped: np.ndarray, ks: Sequence[int] = TOP_KS) -> Dict:
    """precision@K / recall@K (K = number flipped, and each of ks) of the ranking by
    `suspicion` (highest first, ties in index order) and its AUROC."""
    from sklearn.metrics import roc_auc_score
    suspicion = np.asarray(suspicion, dtype=np.float64)
    flipped = np.asarray(flipped, dtype=bool)
    if suspicion.shape != flipped.shape:
        raise BenchError(f"{len(suspicion)} scores for {len(flipped)} labels")
    order = np.argsort(-suspicion, kind="stable")
    positives = int(flipped.sum())
    result = {"flipped": positives}
    for name, k in [("n", positives)] + [(str(k), k) for k in ks]:
        k = min(k, len(order))
        hits = int(flipped[order[:k]].sum()) if k else 0
        result[f"precision@{name}"] = hits / k if k else None
        result[f"recall@{name}"] = hits / positives if positives else None
    result["auroc"] = (float(roc_auc_score(flipped, suspicion))
                       if 0 < positives < len(flipped) else None)
    return result


def set_metrics(flagged: np.ndarray, flipped: np.ndarray) -> Dict:
    """Precision and recall of a flagged set (boolean mask)."""
    flagged, flipped = np.asarray(flagged, dtype=bool), np.asarray(flipped, dtype=bool)
    hits = int((flagged & flipped).sum())
    return {"flagged": int(flagged.sum()), "precision": hits / flagged.sum() if flagged.any() else None,
            "recall": hits / flipped.sum() if flipped.any() else None}


def self_confidence(probabilities: np.ndarray, given: np.ndarray) -> np.ndarray:
    return probabilities[np.arange(len(given)), given]


def normalised_margin(probabilities: np.ndarray, given: np.ndarray) -> np.ndarray:
    """p[y] - max over the other classes (cleanlab's normalized_margin up to (x+1)/2)."""
    rows = np.arange(len(given))
    others = probabilities.copy()
    others[rows, given] = -np.inf
    return probabilities[rows, given] - others.max(1)


def per_class_normalised(trust: np.ndarray, given: np.ndarray) -> np.ndarray:
    """trust / the median trust of the images with the same given label (the learned weights
    also rise for rare classes; this removes the class-level scale)."""
    out = np.empty_like(trust, dtype=np.float64)
    for label in np.unique(given):
        members = given == label
        median = float(np.median(trust[members]))
        out[members] = trust[members] / median if median > 0 else trust[members]
    return out


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number of each position: within each label, a seeded permutation dealt round-robin."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        fold[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)
    return fold


def fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def markdown_table(levels: Dict[str, Dict]) -> str:
    lines = ["| noise | flipped / train | ranking | runs | P@flipped | P@50 | R@50 | P@100 | R@100 | AUROC |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for noise, level in levels.items():
        for method in level["methods"]:
            m = method["metrics"]
            lines.append(f"| {noise} | {level['flipped']} / {level['train']} | {method['name']} | "
                         f"{method['runs']} | {fmt(m['precision@n'])} | {fmt(m['precision@50'])} | "
                         f"{fmt(m['recall@50'])} | {fmt(m['precision@100'])} | "
                         f"{fmt(m['recall@100'])} | {fmt(m['auroc'])} |")
    sets = [(noise, level["find_label_issues"]) for noise, level in levels.items()
            if level.get("find_label_issues")]
    if sets:
        lines += ["", "| noise | cleanlab.filter.find_label_issues (K-fold) | flagged | precision | recall |",
                  "|---|---|---|---|---|"]
        for noise, entry in sets:
            lines.append(f"| {noise} | {entry['name']} | {entry['flagged']} | "
                         f"{fmt(entry['precision'])} | {fmt(entry['recall'])} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- runs

@dataclass
class Job:
    key: str              # e.g. nr0.2/BOTH, nr0.2/fold1
    data_dir: Path
    noise: float          # the -nr of the run
    los_model: str
    hyper_opt: str
    prepare: Optional[Callable[[], bool]] = None  # makes the data dir; False: not yet possible
    process: Optional[subprocess.Popen] = None
    log: Optional[Path] = None
    started: float = 0.0
    status: str = "pending"
    extra: Dict = field(default_factory=dict)


def run_paths(data_root: Path, data_dir: Path, los_model: str, hyper_opt: str, noise: float):
    """(run folder, run name) of a configuration on a folder dataset."""
    from custom_datasets.folder import dataset_name, folder_settings
    from custom_runs import run_files
    settings = folder_settings(data_dir)
    folder = run_files.run_dir(data_root, dataset_name(data_dir), RUN_FOLDER)
    name = run_files.run_name(settings.model, hyper_opt, "NONE", los_model, 1, 1.0, noise)
    return folder, name, settings


def finished_results(data_root: Path, job: Job, epochs: int) -> Optional[dict]:
    from custom_runs import run_files
    if not (job.data_dir / "train").is_dir():
        return None
    folder, name, _ = run_paths(data_root, job.data_dir, job.los_model, job.hyper_opt, job.noise)
    path = run_files.results_path(folder, name)
    if not path.is_file():
        return None
    results = run_files.load_results(path)
    if run_files.finished(results) and results.get("epochs") == epochs:
        return results
    return None


def command(args, job: Job) -> List[str]:
    cmd = ["nice", "-n", str(args.nice), sys.executable, str(REPO / "implicit-augment.py"),
           "--dataset", "folder", "--data-dir", str(job.data_dir), "--data", str(args.runs_root),
           "-nr", str(job.noise), "--epochs", str(args.epochs), "-r", RUN_FOLDER, "--resume",
           "--los-model", job.los_model, "--hyper-opt", job.hyper_opt]
    return cmd + (["--no-cuda"] if args.no_cuda else [])


def run_jobs(args, jobs: List[Job]) -> List[Job]:
    """Trains what is not finished, --parallel at a time; returns the failed jobs."""
    pending = [job for job in jobs if finished_results(args.runs_root, job, args.epochs) is None]
    for job in jobs:
        if job not in pending:
            job.status = "finished"
    if pending:
        print(f"training {len(pending)} of {len(jobs)} runs ({args.parallel} at a time, "
              f"{args.threads} thread(s) each); logs in {args.out / 'logs'}", flush=True)
    running: List[Job] = []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    failed = []
    try:
        schedule(args, pending, running, failed, env)
    except KeyboardInterrupt:
        # the runs save every epoch: stop them and let the same command continue them later
        for job in running:
            job.process.terminate()
        for job in running:
            job.process.wait()
        raise
    return failed


def schedule(args, pending: List[Job], running: List[Job], failed: List[Job], env: Dict) -> None:
    while pending or running:
        for job in list(running):
            code = job.process.poll()
            if code is None:
                continue
            running.remove(job)
            minutes = (time.time() - job.started) / 60
            job.status = "finished" if code == 0 else f"failed (exit {code})"
            print(f"{job.key}: {job.status} after {minutes:.1f} min", flush=True)
            if code != 0:
                failed.append(job)
        launched = False
        for job in list(pending):
            if len(running) >= args.parallel:
                break
            if job.prepare is not None and not job.prepare():
                continue  # its split file does not exist yet: a full run makes it
            pending.remove(job)
            job.log = args.out / "logs" / f"{job.key.replace('/', '_')}.log"
            job.log.parent.mkdir(parents=True, exist_ok=True)
            with open(job.log, "a") as handle:
                job.process = subprocess.Popen(command(args, job), stdout=handle,
                                               stderr=subprocess.STDOUT, env=env, cwd=REPO)
            job.started = time.time()
            running.append(job)
            launched = True
            print(f"{job.key}: started", flush=True)
        if pending and not running and not launched:
            for job in pending:
                job.status = "not started (no split file: its full runs failed)"
            failed += pending
            break
        time.sleep(0 if launched else 5)


def split_of(args, noise: float):
    """(train indices, noisy labels of the official set) of the folder at -nr noise, or None."""
    from custom_datasets.folder import dataset_name
    from custom_runs import run_files
    path = run_files.run_dir(args.runs_root, dataset_name(args.export), RUN_FOLDER) / \
        run_files.split_file_name(1, 1.0, noise)
    if not path.is_file():
        return None
    _, train, noisy = run_files.load_torch(path)
    return train.long().numpy(), noisy.long().numpy()


def fold_dir(args, noise: float, fold: int) -> Path:
    return args.out / "folds" / f"{args.export.name}_nr{noise:g}_fold{fold}"


def link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def make_fold_folders(args, noise: float) -> bool:
    """The K fold folders of a noise level (once; False while the split file is missing)."""
    from custom_datasets.folder import scan_folder
    wanted = [fold_dir(args, noise, k) for k in range(args.folds)]
    if all(path.is_dir() for path in wanted):
        return True
    split = split_of(args, noise)
    if split is None:
        return False
    train, noisy = split
    layout = scan_folder(args.export)
    official = layout.train + layout.valid
    given = noisy[train]
    fold = stratified_folds(given, args.folds, args.seed)
    for k, target in enumerate(wanted):
        if target.is_dir():
            continue
        tmp = target.with_name(f".{target.name}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        for position in np.flatnonzero(fold != k):
            path, _ = official[train[position]]
            link_or_copy(path, tmp / "train" / layout.classes[given[position]] / path.name)
        for part, samples in (("valid", layout.valid), ("test", layout.test)):
            for path, label in samples:
                link_or_copy(path, tmp / part / layout.classes[label] / path.name)
        (tmp / "fold.json").write_text(json.dumps(
            {"noise": noise, "fold": k, "folds": args.folds, "seed": args.seed,
             "held_out_positions": np.flatnonzero(fold == k).tolist()}))
        tmp.rename(target)
    return True


def plan(args) -> List[Job]:
    """The runs, one noise level after the other (Baseline and BOTH, the folds, WGHT: a partial
    table compares the single-run scores with the K-fold ones soonest)."""
    jobs = []
    for noise in args.noise:
        full = {name: Job(f"nr{noise:g}/{name}", args.export, noise, los_model, hyper_opt)
                for name, (los_model, hyper_opt) in FULL_RUNS.items()}
        jobs += [full["Baseline"], full["BOTH"]]
        for k in range(args.folds):
            jobs.append(Job(f"nr{noise:g}/fold{k}", fold_dir(args, noise, k), 0.0, "NONE", "NONE",
                            prepare=lambda noise=noise: make_fold_folders(args, noise)))
        jobs.append(full["WGHT"])
    return jobs


# ----------------------------------------------------------------------------- scoring

def network_probs(checkpoint_path: Path, model: str, settings, images, device) -> np.ndarray:
    import torch
    from custom_runs import run_files
    from custom_reports.suspects import network_probabilities
    checkpoint = run_files.load_torch(checkpoint_path)
    data = SimpleNamespace(train_images=images)
    return network_probabilities(checkpoint, model, settings, data, torch.arange(len(images)),
                                 device, path=checkpoint_path).double().numpy()


def score_level(args, noise: float, jobs: Dict[str, Job], device) -> Optional[Dict]:
    """Every ranking of one noise level that its finished runs allow."""
    import torch
    import torch.nn.functional as F
    from custom_datasets.folder import folder_settings
    from custom_datasets.sources import load_data
    from custom_runs import run_files
    split = split_of(args, noise)
    if split is None:
        return None
    train, noisy = split
    settings = folder_settings(args.export)
    data = load_data(settings, args.runs_root)
    given = noisy[train]
    true = data.train_targets.numpy()[train]
    flipped = given != true
    images = data.train_images[torch.as_tensor(train)]
    methods, missing = [], []

    def add(name, suspicion, runs, minutes):
        methods.append({"name": name, "runs": runs, "train_minutes": round(minutes, 1),
                        "metrics": ranking_metrics(suspicion, flipped)})

    full = {}
    for name in FULL_RUNS:
        job = jobs[f"nr{noise:g}/{name}"]
        results = finished_results(args.runs_root, job, args.epochs)
        if results is None:
            missing.append(job.key)
            continue
        folder, run_name, _ = run_paths(args.runs_root, args.export, job.los_model, job.hyper_opt, noise)
        entry = {"minutes": results["timings_s"]["total"] / 60}
        for kind, path in (("best", run_files.best_checkpoint_path(folder, run_name)),
                           ("last", run_files.last_checkpoint_path(folder, run_name))):
            entry[kind] = network_probs(path, settings.model, settings, images, device)
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
        add(f"AutoDO trust ({name} run, {what})", -entry["trust"], 1, entry["minutes"])
        add(f"AutoDO trust / class median ({name} run)",
            -per_class_normalised(entry["trust"], given), 1, entry["minutes"])
    for name in ("BOTH", "WGHT", "Baseline"):
        if name not in full:
            continue
        entry = full[name]
        for kind in ("best", "last"):
            add(f"self-confidence, {name} network ({kind})",
                -self_confidence(entry[kind], given), 1, entry["minutes"])
        add(f"normalised margin, {name} network (best)",
            -normalised_margin(entry["best"], given), 1, entry["minutes"])
    if "BOTH" in full:
        entry = full["BOTH"]
        add("trust × self-confidence (BOTH run, best)",
            -(entry["trust"] * self_confidence(entry["best"], given)), 1, entry["minutes"])
    level = {"train": int(len(train)), "flipped": int(flipped.sum()),
             "noise_ratio": noise, "methods": methods, "missing_runs": missing}
    level.update(score_folds(args, noise, jobs, given, flipped, images, device, add, missing))
    return level


def score_folds(args, noise, jobs, given, flipped, images, device, add, missing) -> Dict:
    """cleanlab on the out-of-sample probabilities of the K fold Baselines."""
    from custom_datasets.folder import folder_settings
    from custom_runs import run_files
    if not args.folds:
        return {}
    minutes, complete = 0.0, True
    probabilities = {}
    for k in range(args.folds):
        job = jobs[f"nr{noise:g}/fold{k}"]
        results = finished_results(args.runs_root, job, args.epochs)
        if results is None:
            missing.append(job.key)
            complete = False
            continue
        held_out = np.array(json.loads((job.data_dir / "fold.json").read_text())["held_out_positions"])
        folder, run_name, settings = run_paths(args.runs_root, job.data_dir, "NONE", "NONE", 0.0)
        minutes += results["timings_s"]["total"] / 60
        for kind, path in (("best", run_files.best_checkpoint_path(folder, run_name)),
                           ("last", run_files.last_checkpoint_path(folder, run_name))):
            if kind not in probabilities:
                probabilities[kind] = np.full((len(given), len(settings.classes)), np.nan)
            probabilities[kind][held_out] = network_probs(path, settings.model, settings,
                                                          images[held_out], device)
    if not complete:
        return {}
    for kind in ("best", "last"):
        if np.isnan(probabilities[kind]).any():
            raise BenchError(f"noise {noise}: the folds do not cover every train image")
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    for kind in ("best", "last"):
        for method in ("self_confidence", "normalized_margin"):
            quality = get_label_quality_scores(given, probabilities[kind], method=method)
            add(f"cleanlab {method}, {args.folds}-fold Baselines ({kind})", -quality,
                args.folds, minutes)
    flagged = find_label_issues(given, probabilities["best"])
    entry = {"name": f"default (prune_by_noise_rate), {args.folds}-fold Baselines (best)"}
    entry.update(set_metrics(flagged, flipped))
    return {"find_label_issues": entry}


# ----------------------------------------------------------------------------- main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--out", type=Path, required=True,
        help="working folder: the export, the runs, the fold folders, logs, table (reused)")
    add("--dataset", default="FashionMNIST", help="in-memory benchmark to export (default: FashionMNIST)")
    add("--source-data", default="./local_data", help="its files (default: ./local_data)")
    add("--noise", type=float, nargs="+", default=[0.2, 0.4], help="-nr levels (default: 0.2 0.4)")
    add("--epochs", type=int, default=50, help="epochs of every run (default: 50)")
    add("--folds", type=int, default=4, help="K of the cross-validation; 0: none (default: 4)")
    add("--train-per-class", type=int, default=200, help="(default: 200)")
    add("--valid-per-class", type=int, default=30, help="(default: 30)")
    add("--test-per-class", type=int, default=100, help="(default: 100)")
    add("--seed", type=int, default=0, help="export and fold seed (default: 0)")
    add("--parallel", type=int, default=2, help="runs at a time (default: 2)")
    add("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run (default: 1)")
    add("--nice", type=int, default=10, help="niceness of the runs (default: 10)")
    add("--no-cuda", action="store_true", help="train and predict on the CPU")
    add("--report-only", action="store_true", help="train nothing: the table of the finished runs")
    args = parser.parse_args(argv)
    checks = [(args.epochs >= 1, "--epochs must be >= 1"), (args.folds == 0 or args.folds >= 2,
              "--folds must be 0 or >= 2"), (args.parallel >= 1, "--parallel must be >= 1"),
              (args.threads >= 1, "--threads must be >= 1"),
              (all(0 < n < 1 for n in args.noise), "--noise levels must be in (0, 1)")]
    for ok, message in checks:
        if not ok:
            parser.exit(2, f"label_errors.py: error: {message}\n")
    return args


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
    args.export = args.out / f"{args.dataset.lower()}_{args.train_per_class}"
    args.runs_root = args.out / "runs"
    if not args.export.is_dir():
        from custom_datasets import export_folder
        code = export_folder.main(["--dataset", args.dataset, "--data", args.source_data, "--out",
                                   str(args.export), "--train-per-class", str(args.train_per_class),
                                   "--valid-per-class", str(args.valid_per_class),
                                   "--test-per-class", str(args.test_per_class), "--seed", str(args.seed)])
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
    levels = {}
    for noise in args.noise:
        level = score_level(args, noise, by_key, device)
        if level is not None:
            levels[f"{noise:.0%}"] = level
    table = markdown_table(levels)
    print(table)
    for noise, level in levels.items():
        if level["missing_runs"]:
            print(f"noise {noise}: not finished, so not in the table: "
                  f"{', '.join(level['missing_runs'])}", file=sys.stderr)
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else list(argv))),
              "dataset": args.dataset, "epochs": args.epochs, "folds": args.folds,
              "train_per_class": args.train_per_class, "valid_per_class": args.valid_per_class,
              "test_per_class": args.test_per_class, "seed": args.seed, "levels": levels}
    from custom_runs import run_files
    run_files.save_json(record, args.out / "label_errors.json")
    with run_files.atomic_path(args.out / "label_errors.md") as tmp:
        Path(tmp).write_text(table + "\n")
    print(f"wrote {args.out / 'label_errors.json'}, {args.out / 'label_errors.md'}")
    return 1 if failed else 0


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill`: stop the runs too
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"label_errors.py: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("label_errors.py: interrupted; the same command continues the unfinished runs",
              file=sys.stderr)
        sys.exit(130)
