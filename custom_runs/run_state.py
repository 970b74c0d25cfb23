"""What a run holds and keeps (docs/design.md §7-§8): the epoch seeds that make a resumed run repeat
an uninterrupted one, the configuration, the checkpoints (saving and resuming from last_),
the results file (while running, and of a run that stopped), the best and final metrics,
the state every rank must share, and the versions a results file records."""
import functools
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from custom_runs import run_files, stop_points
from custom_runs.identity import IDENTITY_OPTIONS
from custom_runs.metrics import learned_summary, minority_accuracy
from custom_common.errors import UsageError
from custom_runs.options import saved_option
from custom_common.signals import deferred_stops


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


class RunState:
    """The state of an Experiment (custom_runs.experiment) across its epochs and processes."""

    def start_state(self) -> None:
        self.best = {"epoch": -1, "acc": 0.0}
        self.best_valid = {"epoch": -1}
        self.history, self.diagnostics, self.lr_changes, self.attempts = [], [], [], []
        self.timings = {"hyper": 0.0, "train": 0.0, "test": 0.0, "valid": 0.0, "total": 0.0}

    def config(self) -> Dict:
        config = {key: value for key, value in vars(self.args).items()
                  if key not in ("resume", "force")}
        config["world_size"] = self.collectives.world_size  # not part of the identity
        return config

    def checkpoint(self, epoch: int, acc: float) -> Dict:
        return {"encoder_state_dict": self.encoder.state_dict(),
                "decoder_state_dict": self.decoder.state_dict(),
                "reweight_state_dict": self.loss_model.state_dict(),
                "augment_state_dict": self.augment_model.state_dict() if self.augment_model else {},
                "acc": acc, "epoch": epoch}

    def save_last(self, epoch: int) -> None:
        state = self.checkpoint(epoch, self.best["acc"])
        state.update({"optimizer_state_dict": self.optimizer.state_dict(),
                      "hyper_optimizer_state_dict":
                          self.hyper.optimizer.state_dict() if self.hyper.optimizer else {},
                      "skipped_hyper_steps": self.hyper.skipped_steps, "lr_changes": self.lr_changes,
                      "attempts": self.attempts,
                      "best": self.best, "best_valid": self.best_valid, "history": self.history,
                      "hyper_diagnostics": self.diagnostics, "timings_s": self.timings,
                      "compute_path": self.compute_path.record(),
                      # no RNG states: every epoch reseeds from (seed, epoch), see seed_epoch
                      "config": self.config()})
        run_files.save_torch(state, self.last_path)

    def load_last(self) -> int:
        stop_points.stop_if_asked(self.stop_at, ("setup", "load_last"), self.collectives.rank)
        state = run_files.load_torch(self.last_path, map_location=self.device)
        saved = state.get("config", {})
        differences = [f"{key} {saved_option(saved, key)!r} -> {getattr(self.args, key)!r}"
                       for key in IDENTITY_OPTIONS
                       if comparable(key, saved_option(saved, key)) != comparable(key, getattr(self.args, key))]
        if differences:
            raise UsageError(f"--resume: the options differ from the checkpoint's "
                             f"({'; '.join(differences)}); use the original options or --force")
        first_epoch = int(state["epoch"]) + 1
        # the precision is not part of a configuration's identity (a run may move to another
        # machine), but a change makes the resumed epochs differ from an uninterrupted run's
        saved_path = state.get("compute_path", {}).get("description")
        if saved_path is not None and saved_path != self.compute_path.describe():
            print(f"--resume: the checkpoint was trained with {saved_path}; epochs from "
                  f"{first_epoch + 1} use {self.compute_path.describe()}", file=sys.stderr)
        self.lr_changes = list(state.get("lr_changes", []))
        # a checkpoint written before attempts were recorded: one attempt of unknown code
        self.attempts = list(state.get("attempts") or [
            {"first_epoch": 0, "commit": "unknown", "uncommitted_changes": "unknown",
             "compute_path": saved_path, "started": None}])
        if saved.get("lr") != self.args.lr:
            if first_epoch >= self.args.epochs:  # nothing left to train at the new rate
                self.args.lr = saved.get("lr")
            else:
                print(f"--resume: learning rate {saved.get('lr')} -> {self.args.lr} from epoch "
                      f"{first_epoch + 1}", file=sys.stderr)
                self.lr_changes.append({"epoch": first_epoch, "from": saved.get("lr"),
                                        "to": self.args.lr})
        self.encoder.load_state_dict(state["encoder_state_dict"])
        self.decoder.load_state_dict(state["decoder_state_dict"])
        self.loss_model.load_state_dict(state["reweight_state_dict"])
        if self.augment_model is not None:
            self.augment_model.load_state_dict(state["augment_state_dict"])
        self.optimizer.load_state_dict(state["optimizer_state_dict"])
        if self.hyper.optimizer is not None:
            self.hyper.optimizer.load_state_dict(state["hyper_optimizer_state_dict"])
        self.hyper.skipped_steps = int(state["skipped_hyper_steps"])
        self.best, self.history = state["best"], state["history"]
        self.diagnostics, self.timings = state["hyper_diagnostics"], state["timings_s"]
        if "best_valid" in state:
            self.best_valid = state["best_valid"]
        else:  # written before validation selection: its epochs have no validation numbers
            self.timings.setdefault("valid", 0.0)
            if first_epoch < self.args.epochs:
                print(f"--resume: {self.last_path.name} has no validation accuracy; best_valid "
                      f"chooses among epochs {first_epoch + 1} on only", file=sys.stderr)
        return first_epoch

    def begin_attempt(self, first_epoch: int) -> None:
        """This process trains the epochs from `first_epoch` on (none: no attempt to record)."""
        if first_epoch < self.args.epochs:
            self.attempts.append(attempt(first_epoch, self.compute_path.describe()))

    def results(self, status: str, final: Dict, learned: Optional[Dict] = None) -> Dict:
        split = self.split
        noisy = int((split.train_targets[split.train_indices]
                     != self.data.train_targets[split.train_indices]).sum())
        learned = dict(learned or learned_summary(self.loss_model, self.augment_model, split,
                                                  self.data.train_targets, self.settings))
        learned["skipped_hyper_steps"] = self.hyper.skipped_steps
        return {"format": run_files.RESULTS_FORMAT_VERSION, "run_name": self.name,
                "dataset": self.args.dataset, "run_folder": self.args.run_folder,
                "seed": self.args.seed, "split_seed": self.split_seed, "status": status,
                "world_size": self.collectives.world_size,
                "config": self.config(), "lr_changes": self.lr_changes, "attempts": self.attempts,
                "epochs": self.args.epochs, "epochs_done": len(self.history),
                "best": self.best, "final": final,
                # null where no epoch was validated (a resume of a run from before format 2)
                "best_valid": self.best_valid if self.best_valid["epoch"] >= 0 else None,
                "history": self.history,
                "hyper_diagnostics": self.diagnostics, "learned": learned,
                "split": {"train_size": len(split.train_indices),
                          "valid_size": len(split.valid_indices), "noisy_labels": noisy,
                          "train_class_counts": self.train_class_counts},
                "test_set": "valid" if getattr(self.data, "test_is_valid", False) else "test",
                "timings_s": self.timings, "compute_path": self.compute_path.record(),
                "versions": versions(self.device)}

    def update_best(self, epoch: int, test: Dict) -> bool:
        """Whether epoch `epoch` (its test metrics) is the best so far; it becomes `best` if so."""
        new_best = test["acc"] > self.best["acc"] or self.best["epoch"] < 0
        if new_best:
            self.best = {"epoch": epoch, "acc": test["acc"], "loss": test["loss"],
                         "per_class_acc": test["per_class_acc"],
                         "minority_acc": minority_accuracy(test["per_class_acc"], self.settings)}
        return new_best

    def update_best_valid(self, epoch: int, test: Dict, valid: Dict) -> bool:
        """Whether epoch `epoch` has the best validation accuracy so far (ties: the lower
        validation loss, then the earlier epoch); it becomes `best_valid` if so, with its
        test metrics."""
        held = self.best_valid
        new_best = held["epoch"] < 0 or valid["acc"] > held["valid_acc"] or \
            (valid["acc"] == held["valid_acc"] and valid["loss"] < held["valid_loss"])
        if new_best:
            self.best_valid = {"epoch": epoch, "acc": test["acc"], "loss": test["loss"],
                               "per_class_acc": test["per_class_acc"],
                               "minority_acc": minority_accuracy(test["per_class_acc"], self.settings),
                               "valid_acc": valid["acc"], "valid_loss": valid["loss"]}
        return new_best

    def save_epoch(self, epoch: int, acc: float, new_best: bool, new_best_valid: bool) -> Dict:
        """The main process's files at the end of an epoch: best_ and bestvalid_ (if it is
        that), last_, and the results file; returns the summary of the learned tables."""
        if new_best:
            run_files.save_torch(self.checkpoint(epoch, acc), self.best_path)
        if new_best_valid:
            run_files.save_torch({**self.checkpoint(epoch, acc),
                                  "valid_acc": self.best_valid["valid_acc"]}, self.best_valid_path)
        self.save_last(epoch)
        learned = learned_summary(self.loss_model, self.augment_model, self.split,
                                  self.data.train_targets, self.settings)
        run_files.save_json(self.results("running", self.final_metrics(), learned), self.results_path)
        return learned

    def save_stopped_results(self, status: str) -> None:
        """The results file of a run that stopped early says so (its epochs stay usable).
        A second Ctrl-C or SIGTERM waits until the file is written."""
        if not self.history or not self.is_main:
            return
        if len(self.history) >= self.args.epochs:  # stopped after its last epoch was saved
            status = "finished"
        with deferred_stops():
            run_files.save_json(self.results(status, self.final_metrics()), self.results_path)

    def mark_results_interrupted(self) -> None:
        """After a save that failed (a full disk, a folder made read-only): the results file
        of the last epoch whose files were written says "interrupted", so that it agrees with
        last_, which --resume continues from. Where even that cannot be written, every file
        stays as the last good epoch left it."""
        if not self.is_main:
            return
        try:
            results = run_files.load_results(self.results_path)
        except run_files.UnreadableFile:
            return
        if results.get("status") == "running":
            results["status"] = "interrupted"
            try:
                run_files.save_json(results, self.results_path)
            except run_files.SaveFailed:
                pass

    def how_to_recover(self) -> str:
        if self.history:
            return (f"epoch {len(self.history)} is the last good one, in {self.last_path.name}: "
                    f"continue with the same command plus --resume and a lower --lr (now {self.args.lr})")
        return (f"no epoch finished, so nothing was saved: start again with a lower --lr "
                f"(now {self.args.lr}) or check the data")

    def final_metrics(self) -> Dict:
        last = self.history[-1]
        return {"epoch": last["epoch"], "acc": last["test_acc"], "loss": last["test_loss"],
                "per_class_acc": last["per_class_acc"],
                "minority_acc": minority_accuracy(last["per_class_acc"], self.settings)}

    def synchronised_state(self) -> Dict[str, torch.Tensor]:
        """What every rank must hold bit for bit after an epoch: the network, the
        hyperparameter tables and their optimiser state."""
        state = {f"encoder.{name}": value for name, value in self.encoder.state_dict().items()}
        state.update({f"decoder.{name}": value for name, value in self.decoder.state_dict().items()})
        state.update({f"loss_model.{name}": value for name, value in self.loss_model.state_dict().items()})
        if self.augment_model is not None:
            state.update({f"augment_model.{name}": value
                          for name, value in self.augment_model.state_dict().items()})
        if self.hyper.optimizer is not None:
            state.update({f"hyper_optimizer.square_avg.{name}": value
                          for name, value in self.hyper.optimizer.square_avg.items()})
        return state
