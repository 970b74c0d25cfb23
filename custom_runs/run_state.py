"""What a run keeps (docs/design.md §7-§8): the epoch seeds that make a resumed run repeat an
uninterrupted one, the run's record (custom_runs/run_values.py) and its files: the
configuration, the checkpoints (saving and resuming from last_), the results file (while
running, and of a run that stopped), the best and final metrics, the state every rank must
share, and the versions a results file records."""
import functools
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from custom_common.errors import UsageError
from custom_common.settings import DatasetSettings
from custom_common.signals import deferred_stops
from custom_runs import run_files, stop_points
from custom_runs.identity import IDENTITY_OPTIONS
from custom_runs.metrics import learned_summary, minority_accuracy
from custom_runs.options import saved_option
from custom_runs.run_values import PreparedData, RunModels, RunParts, RunPlan, RunRecord


def comparable(option: str, value):
    """An identity option's value as a resume compares it: --data-dir as the absolute path
    it names (a relative spelling after an absolute one is the same folder)."""
    if option == "data_dir" and value:
        return str(Path(value).expanduser().resolve())
    return value


# rank r's augmentation stream starts this far from rank 0's: the ranks augment different
# images and must not draw the same random numbers for them
RANK_SEED_OFFSET = 1_000_003


def seed_epoch(seed: int, epoch: int, permutations: Optional[torch.Generator] = None,
               rank: int = 0) -> None:
    """Every epoch draws from RNGs seeded by (seed, epoch), so a resumed run
    repeats exactly the epochs an uninterrupted one would have run. The batches'
    permutations come from `permutations`, seeded alike on every rank (all ranks
    cut the same global batches); the global RNGs, which draw the augmentations,
    are offset by the rank (rank 0 draws what a one-process run draws)."""
    base = seed * 100_003 + epoch
    if permutations is not None:
        permutations.manual_seed(base)
    torch.manual_seed(base + rank * RANK_SEED_OFFSET)
    np.random.seed((base + rank * RANK_SEED_OFFSET) % 2 ** 32)



PROJECT_ROOT = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def code_version(root: Path = PROJECT_ROOT) -> Dict[str, object]:
    """The project's own version: the git commit of its checkout at `root`, and whether
    tracked files differ from it (untracked files, such as data and runs, do not count).
    "unknown" for both outside a git checkout of the project, or where git is missing."""
    def git(*arguments: str) -> str:
        # --no-optional-locks: a look that never takes the index lock another git holds
        return subprocess.run(["git", "--no-optional-locks", "-C", str(root), *arguments],
                              capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != Path(root).resolve():
            raise ValueError("the project is a folder of another repository")
        commit = git("rev-parse", "--verify", "HEAD")
        changed = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, ValueError, subprocess.SubprocessError):
        return {"commit": "unknown", "uncommitted_changes": "unknown"}
    return {"commit": commit, "uncommitted_changes": changed}


def versions(device: torch.device) -> Dict[str, object]:
    import kornia
    import torchvision
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "kornia": kornia.__version__,
            "numpy": np.__version__, "cuda": torch.version.cuda,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            **code_version()}


def attempt(first_epoch: int, compute_path: str) -> Dict[str, object]:
    """One process's part of a run, from epoch `first_epoch` (counted from 0): the code and
    the compute path its epochs were trained with, and when it started."""
    code = code_version()
    return {"first_epoch": first_epoch, "commit": code["commit"],
            "uncommitted_changes": code["uncommitted_changes"], "compute_path": compute_path,
            "started": datetime.now().astimezone().isoformat(timespec="seconds")}


def run_config(plan: RunPlan) -> Dict:
    """The options a run's files record (the options that only say how to start it left out)."""
    config = {key: value for key, value in vars(plan.args).items()
              if key not in ("resume", "force")}
    config["world_size"] = plan.collectives.world_size  # not part of the identity
    return config


def start_record(config: Dict) -> RunRecord:
    """The record of a run before its first epoch; `config`: run_config's."""
    return RunRecord(config=config, best={"epoch": -1, "acc": 0.0},
                     best_valid={"epoch": -1}, history=[], diagnostics=[], lr_changes=[],
                     attempts=[],
                     timings={"hyper": 0.0, "train": 0.0, "test": 0.0, "valid": 0.0, "total": 0.0})


def checkpoint(models: RunModels, epoch: int, acc: float) -> Dict:
    return {"encoder_state_dict": models.encoder.state_dict(),
            "decoder_state_dict": models.decoder.state_dict(),
            "reweight_state_dict": models.loss_model.state_dict(),
            "augment_state_dict": models.augment_model.state_dict() if models.augment_model else {},
            "acc": acc, "epoch": epoch}


def save_last(plan: RunPlan, models: RunModels, record: RunRecord, epoch: int) -> None:
    state = checkpoint(models, epoch, record.best["acc"])
    hyper = models.hyper
    state.update({"optimizer_state_dict": models.optimizer.state_dict(),
                  "hyper_optimizer_state_dict": hyper.optimizer.state_dict() if hyper.optimizer else {},
                  "skipped_hyper_steps": hyper.skipped_steps, "lr_changes": record.lr_changes,
                  "attempts": record.attempts,
                  "best": record.best, "best_valid": record.best_valid, "history": record.history,
                  "hyper_diagnostics": record.diagnostics, "timings_s": record.timings,
                  "compute_path": plan.compute_path.record(),
                  # no RNG states: every epoch reseeds from (seed, epoch), see seed_epoch
                  "config": record.config})
    run_files.save_torch(state, plan.last_path)


def load_last(plan: RunPlan, models: RunModels, record: RunRecord) -> int:
    """Restores the last_ checkpoint's state into `models` and `record`; returns the first
    epoch to train."""
    stop_points.stop_if_asked(plan.stop_at, ("setup", "load_last"), plan.collectives.rank)
    args = plan.args
    state = run_files.load_torch(plan.last_path, map_location=plan.device)
    saved = state.get("config", {})
    differences = [f"{key} {saved_option(saved, key)!r} -> {getattr(args, key)!r}"
                   for key in IDENTITY_OPTIONS
                   if comparable(key, saved_option(saved, key)) != comparable(key, getattr(args, key))]
    if differences:
        raise UsageError(f"--resume: the options differ from the checkpoint's "
                         f"({'; '.join(differences)}); use the original options or --force")
    first_epoch = int(state["epoch"]) + 1
    # the precision is not part of a configuration's identity (a run may move to another
    # machine), but a change makes the resumed epochs differ from an uninterrupted run's
    described = plan.compute_path.describe()
    saved_path = state.get("compute_path", {}).get("description")
    if saved_path is not None and saved_path != described:
        print(f"--resume: the checkpoint was trained with {saved_path}; epochs from "
              f"{first_epoch + 1} use {described}", file=sys.stderr)
    record.lr_changes = list(state.get("lr_changes", []))
    # a checkpoint written before attempts were recorded: one attempt of unknown code
    record.attempts = list(state.get("attempts") or [
        {"first_epoch": 0, "commit": "unknown", "uncommitted_changes": "unknown",
         "compute_path": saved_path, "started": None}])
    if saved.get("lr") != args.lr:
        if first_epoch >= args.epochs:  # nothing left to train at the new rate
            record.config["lr"] = saved.get("lr")
        else:
            print(f"--resume: learning rate {saved.get('lr')} -> {args.lr} from epoch "
                  f"{first_epoch + 1}", file=sys.stderr)
            record.lr_changes.append({"epoch": first_epoch, "from": saved.get("lr"), "to": args.lr})
    models.encoder.load_state_dict(state["encoder_state_dict"])
    models.decoder.load_state_dict(state["decoder_state_dict"])
    models.loss_model.load_state_dict(state["reweight_state_dict"])
    if models.augment_model is not None:
        models.augment_model.load_state_dict(state["augment_state_dict"])
    models.optimizer.load_state_dict(state["optimizer_state_dict"])
    if models.hyper.optimizer is not None:
        models.hyper.optimizer.load_state_dict(state["hyper_optimizer_state_dict"])
    models.hyper.skipped_steps = int(state["skipped_hyper_steps"])
    record.best, record.history = state["best"], state["history"]
    record.diagnostics, record.timings = state["hyper_diagnostics"], state["timings_s"]
    if "best_valid" in state:
        record.best_valid = state["best_valid"]
    else:  # written before validation selection: its epochs have no validation numbers
        record.timings.setdefault("valid", 0.0)
        if first_epoch < args.epochs:
            print(f"--resume: {plan.last_path.name} has no validation accuracy; best_valid "
                  f"chooses among epochs {first_epoch + 1} on only", file=sys.stderr)
    return first_epoch


def begin_attempt(plan: RunPlan, record: RunRecord, first_epoch: int) -> None:
    """This process trains the epochs from `first_epoch` on (none: no attempt to record)."""
    if first_epoch < plan.args.epochs:
        record.attempts.append(attempt(first_epoch, plan.compute_path.describe()))


def results(plan: RunPlan, prepared: PreparedData, models: RunModels, record: RunRecord,
            status: str, final: Dict, learned: Optional[Dict] = None) -> Dict:
    args, split, data = plan.args, prepared.split, prepared.data
    noisy = int((split.train_targets[split.train_indices]
                 != data.train_targets[split.train_indices]).sum())
    learned = dict(learned or learned_summary(models.loss_model, models.augment_model, split,
                                              data.train_targets, plan.settings))
    learned["skipped_hyper_steps"] = models.hyper.skipped_steps
    return {"format": run_files.RESULTS_FORMAT_VERSION, "run_name": plan.name,
            "dataset": args.dataset, "run_folder": args.run_folder,
            "seed": args.seed, "split_seed": prepared.split_seed, "status": status,
            "world_size": plan.collectives.world_size,
            "config": record.config, "lr_changes": record.lr_changes, "attempts": record.attempts,
            "epochs": args.epochs, "epochs_done": len(record.history),
            "best": record.best, "final": final,
            # null where no epoch was validated (a resume of a run from before format 2)
            "best_valid": record.best_valid if record.best_valid["epoch"] >= 0 else None,
            "history": record.history,
            "hyper_diagnostics": record.diagnostics, "learned": learned,
            "split": {"train_size": len(split.train_indices),
                      "valid_size": len(split.valid_indices), "noisy_labels": noisy,
                      "train_class_counts": prepared.train_class_counts},
            "test_set": "valid" if getattr(data, "test_is_valid", False) else "test",
            "timings_s": record.timings, "compute_path": plan.compute_path.record(),
            "versions": versions(plan.device)}


def update_best(record: RunRecord, settings: DatasetSettings, epoch: int, test: Dict) -> bool:
    """Whether epoch `epoch` (its test metrics) is the best so far; it becomes `best` if so."""
    new_best = test["acc"] > record.best["acc"] or record.best["epoch"] < 0
    if new_best:
        record.best = {"epoch": epoch, "acc": test["acc"], "loss": test["loss"],
                       "per_class_acc": test["per_class_acc"],
                       "minority_acc": minority_accuracy(test["per_class_acc"], settings)}
    return new_best


def update_best_valid(record: RunRecord, settings: DatasetSettings, epoch: int, test: Dict,
                      valid: Dict) -> bool:
    """Whether epoch `epoch` has the best validation accuracy so far (ties: the lower
    validation loss, then the earlier epoch); it becomes `best_valid` if so, with its
    test metrics."""
    held = record.best_valid
    new_best = held["epoch"] < 0 or valid["acc"] > held["valid_acc"] or \
        (valid["acc"] == held["valid_acc"] and valid["loss"] < held["valid_loss"])
    if new_best:
        record.best_valid = {"epoch": epoch, "acc": test["acc"], "loss": test["loss"],
                             "per_class_acc": test["per_class_acc"],
                             "minority_acc": minority_accuracy(test["per_class_acc"], settings),
                             "valid_acc": valid["acc"], "valid_loss": valid["loss"]}
    return new_best


def save_epoch(plan: RunPlan, prepared: PreparedData, models: RunModels, record: RunRecord,
               epoch: int, acc: float, new_best: bool, new_best_valid: bool) -> Dict:
    """The main process's files at the end of an epoch: best_ and bestvalid_ (if it is
    that), last_, and the results file; returns the summary of the learned tables."""
    if new_best:
        run_files.save_torch(checkpoint(models, epoch, acc), plan.best_path)
    if new_best_valid:
        run_files.save_torch({**checkpoint(models, epoch, acc),
                              "valid_acc": record.best_valid["valid_acc"]}, plan.best_valid_path)
    save_last(plan, models, record, epoch)
    learned = learned_summary(models.loss_model, models.augment_model, prepared.split,
                              prepared.data.train_targets, plan.settings)
    run_files.save_json(results(plan, prepared, models, record, "running",
                                final_metrics(record, plan.settings), learned), plan.results_path)
    return learned


def save_stopped_results(plan: RunPlan, prepared: PreparedData, parts: Optional[RunParts],
                         record: RunRecord, status: str) -> None:
    """The results file of a run that stopped early says so (its epochs stay usable; `parts`
    is None only before any epoch). A second Ctrl-C or SIGTERM waits until it is written."""
    if not record.history or not plan.is_main:
        return
    if len(record.history) >= plan.args.epochs:  # stopped after its last epoch was saved
        status = "finished"
    with deferred_stops():
        run_files.save_json(results(plan, prepared, parts.models, record, status,
                                    final_metrics(record, plan.settings)), plan.results_path)


def mark_results_interrupted(plan: RunPlan) -> None:
    """After a save that failed (a full disk, a folder made read-only): the results file
    of the last epoch whose files were written says "interrupted", so that it agrees with
    last_, which --resume continues from. Where even that cannot be written, every file
    stays as the last good epoch left it."""
    if not plan.is_main:
        return
    try:
        saved = run_files.load_results(plan.results_path)
    except run_files.UnreadableFile:
        return
    if saved.get("status") == "running":
        saved["status"] = "interrupted"
        try:
            run_files.save_json(saved, plan.results_path)
        except run_files.SaveFailed:
            pass


def how_to_recover(plan: RunPlan, record: RunRecord) -> str:
    if record.history:
        return (f"epoch {len(record.history)} is the last good one, in {plan.last_path.name}: "
                f"continue with the same command plus --resume and a lower --lr (now {plan.args.lr})")
    return (f"no epoch finished, so nothing was saved: start again with a lower --lr "
            f"(now {plan.args.lr}) or check the data")


def final_metrics(record: RunRecord, settings: DatasetSettings) -> Dict:
    last = record.history[-1]
    return {"epoch": last["epoch"], "acc": last["test_acc"], "loss": last["test_loss"],
            "per_class_acc": last["per_class_acc"],
            "minority_acc": minority_accuracy(last["per_class_acc"], settings)}


def synchronised_state(models: RunModels) -> Dict[str, torch.Tensor]:
    """What every rank must hold bit for bit after an epoch: the network, the
    hyperparameter tables and their optimiser state."""
    state = {f"encoder.{name}": value for name, value in models.encoder.state_dict().items()}
    state.update({f"decoder.{name}": value for name, value in models.decoder.state_dict().items()})
    state.update({f"loss_model.{name}": value
                  for name, value in models.loss_model.state_dict().items()})
    if models.augment_model is not None:
        state.update({f"augment_model.{name}": value
                      for name, value in models.augment_model.state_dict().items()})
    if models.hyper.optimizer is not None:
        state.update({f"hyper_optimizer.square_avg.{name}": value
                      for name, value in models.hyper.optimizer.square_avg.items()})
    return state
