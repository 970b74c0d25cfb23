"""The runs of bench/label_errors.py, seed by seed: the full runs on each seed's exported
folder (its noise injected by -nr in run folder run{seed}), the K fold folders whose train/
holds the other folds' images under their noisy labels, and the scheduler that trains them
as niced child processes, reusing finished runs and resuming interrupted ones."""
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from bench.label_errors_scores import stratified_folds

REPO = Path(__file__).resolve().parents[1]

FULL_RUNS = {"Baseline": ("NONE", "NONE"), "WGHT": ("WGHT", "HES"), "BOTH": ("BOTH", "HES")}


@dataclass
class Job:
    key: str              # e.g. seed1/nr0.2/BOTH, seed1/nr0.2/fold1
    data_dir: Path
    run_folder: str       # runN: N seeds the run's noise draw and its training
    noise: float          # the -nr of the run
    los_model: str
    hyper_opt: str
    prepare: Optional[Callable[[], bool]] = None  # makes the data dir; False: not yet possible
    process: Optional[subprocess.Popen] = None
    log: Optional[Path] = None
    started: float = 0.0
    status: str = "pending"
    extra: Dict = field(default_factory=dict)


def run_folder_of(seed: int) -> str:
    return f"run{seed}"


def export_dir(args, seed: int) -> Path:
    """The clean folder of one seed: its class-balanced subset is drawn with that seed."""
    return args.out / f"{args.dataset.lower()}_{args.train_per_class}_seed{seed}"


def run_paths(data_root: Path, data_dir: Path, run_folder: str, los_model: str, hyper_opt: str,
              noise: float):
    """(run folder, run name, settings) of a configuration on a folder dataset."""
    from custom_datasets.folder import dataset_name, folder_settings
    from custom_runs import run_files
    settings = folder_settings(data_dir)
    folder = run_files.run_dir(data_root, dataset_name(data_dir), run_folder)
    name = run_files.run_name(settings.model, hyper_opt, "NONE", los_model, 1, 1.0, noise)
    return folder, name, settings


def finished_results(data_root: Path, job: Job, epochs: int) -> Optional[dict]:
    from custom_runs import run_files
    if not (job.data_dir / "train").is_dir():
        return None
    folder, name, _ = run_paths(data_root, job.data_dir, job.run_folder, job.los_model,
                                job.hyper_opt, job.noise)
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
           "-nr", str(job.noise), "--epochs", str(args.epochs), "-r", job.run_folder, "--resume",
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


def split_of(args, seed: int, noise: float):
    """(train indices, noisy labels of the official set) of a seed's folder at -nr noise, or None."""
    from custom_datasets.folder import dataset_name
    from custom_runs import run_files
    path = run_files.run_dir(args.runs_root, dataset_name(export_dir(args, seed)),
                             run_folder_of(seed)) / run_files.split_file_name(1, 1.0, noise)
    if not path.is_file():
        return None
    _, train, noisy = run_files.load_torch(path)
    return train.long().numpy(), noisy.long().numpy()


def fold_dir(args, seed: int, noise: float, fold: int) -> Path:
    return args.out / "folds" / f"{export_dir(args, seed).name}_nr{noise:g}_fold{fold}"


def link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def make_fold_folders(args, seed: int, noise: float) -> bool:
    """The K fold folders of a seed and noise level (once; False while the split file is
    missing). Each has the export's own valid/ and test/, so a fold's Baseline selects its
    epoch on the same clean images the full runs use."""
    from custom_datasets.folder import scan_folder
    wanted = [fold_dir(args, seed, noise, k) for k in range(args.folds)]
    if all(path.is_dir() for path in wanted):
        return True
    split = split_of(args, seed, noise)
    if split is None:
        return False
    train, noisy = split
    layout = scan_folder(export_dir(args, seed))
    official = layout.train + layout.valid
    given = noisy[train]
    fold = stratified_folds(given, args.folds, seed)
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
            {"noise": noise, "fold": k, "folds": args.folds, "seed": seed,
             "held_out_positions": np.flatnonzero(fold == k).tolist()}))
        tmp.rename(target)
    return True


def level_key(seed: int, noise: float) -> str:
    return f"seed{seed}/nr{noise:g}"


def plan(args) -> List[Job]:
    """The runs: each noise level for every seed before the next level; within a seed the BOTH
    run first (its split file feeds the folds), then the Baseline, the folds, WGHT (the
    --full-runs chosen), so a partial table compares the default ranking with cleanlab's soonest."""
    jobs = []
    for noise in args.noise:
        for seed in args.seeds:
            key, data_dir, run_folder = level_key(seed, noise), export_dir(args, seed), run_folder_of(seed)
            full = {name: Job(f"{key}/{name}", data_dir, run_folder, noise, los_model, hyper_opt)
                    for name, (los_model, hyper_opt) in FULL_RUNS.items() if name in args.full_runs}
            jobs += [full[name] for name in ("BOTH", "Baseline") if name in full]
            for k in range(args.folds):
                jobs.append(Job(f"{key}/fold{k}", fold_dir(args, seed, noise, k), run_folder, 0.0,
                                "NONE", "NONE",
                                prepare=lambda seed=seed, noise=noise: make_fold_folders(args, seed, noise)))
            jobs += [full[name] for name in ("WGHT",) if name in full]
    return jobs
