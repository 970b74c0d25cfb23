"""One configuration of one run, start to finish (DESIGN §2-§8): split, data on
the device, networks, hyperparameter models, the epoch loop, checkpoints and
the results file."""
import functools
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Dict, Iterator, Optional

import numpy as np
import torch
from tqdm import tqdm

from custom_datasets.batches import DeviceBatches, FolderBatches, cycle
from custom_datasets.containers import InMemoryData
from custom_datasets.sources import load_data
from custom_datasets.split import (check_split_feasible, load_or_create_split, made_with_seed,
                                   valid_size_for)
from custom_runs import run_files
from custom_runs.compute_path import choose_compute_path
from custom_runs.identity import IDENTITY_OPTIONS
from custom_runs.distributed import (check_identical, check_tables_requested, main_first,
                                     peer_stopped)
from custom_common.collectives import SINGLE_PROCESS, Collectives
from custom_models.hyper_models import (LEARNED_AUGMENT_MODELS, AugmentModel, LossModel,
                                        RowRMSprop)
from custom_runs.metrics import learned_summary, minority_accuracy
from custom_models.networks import build_network
from custom_runs.options import UsageError, dataset_settings, saved_option
from custom_models.schedule import hyper_learning_rate, learning_rate
from custom_models.training import (Classifier, HyperState, Network, average_buffers, evaluate,
                                    hyper_epoch, train_one_epoch)
from custom_transforms.affine import Resampling
from custom_transforms.base import EvalTransform, TrainTransform


def comparable(option: str, value):
    """An identity option's value as a resume compares it: --data-dir as the absolute path
    it names (a relative spelling after an absolute one is the same folder)."""
    if option == "data_dir" and value:
        return str(Path(value).expanduser().resolve())
    return value


def select_device(args) -> torch.device:
    if args.no_cuda:
        return torch.device("cpu")
    if torch.cuda.is_available():
        if args.gpu >= torch.cuda.device_count():
            raise UsageError(f"--gpu {args.gpu}: only {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", args.gpu)
    return torch.device("cpu")


def cpu_fallback_note(args) -> str:
    """Said out loud when training starts: a broken CUDA install must not turn a GPU job into
    a silent CPU one."""
    ignored = " (--gpu ignored)" if args.gpu != 0 else ""
    return f"note: CUDA is not available, training on the CPU{ignored}; --no-cuda silences this"


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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred_stops() -> Iterator[None]:
    """Ctrl-C and SIGTERM that arrive inside the block take effect when it ends, through the
    handlers that were in place before it (a stop is postponed, never lost). Not a signal
    mask: Python runs its handlers in the main thread even when the kernel hands the signal
    to another thread (torch's, tensorboard's), so a mask on the main thread defers nothing.
    Outside the main thread, where handlers cannot be set, the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    # None: a handler set outside Python, which stays
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    previous = {signum: handler for signum, handler in previous.items() if handler is not None}
    for signum in previous:
        signal.signal(signum, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


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


class Experiment:
    def __init__(self, args, data=None, collectives: Collectives = SINGLE_PROCESS):
        """`data` (InMemoryData) replaces the dataset's files, e.g. random images in benchmarks;
        `collectives`: this process's rank among the processes of a torchrun launch."""
        self.args = args
        self.data = data
        self.collectives = collectives
        self.is_main = collectives.is_main
        # the batches' epoch permutations (seeded by seed_epoch, alike on every rank)
        self.permutations = torch.Generator()
        self.settings = dataset_settings(args)
        self.device = select_device(args)
        self.compute_path = choose_compute_path(self.device, args.no_amp, args.compile)
        # a folder dataset's runs go under {data}/folder_{DIR's name}_{hash of its path}/
        self.folder = run_files.run_dir(args.data, self.settings.name, args.run_folder)
        self.name = run_files.run_name(args.model, args.hyper_opt, args.aug_model, args.los_model,
                                       args.imbalance_ratio, args.subsample_ratio, args.noise_ratio,
                                       args.overfit, args.oversplit, args.paper_text,
                                       args.policy_variant)
        self.best_path = run_files.best_checkpoint_path(self.folder, self.name)
        self.last_path = run_files.last_checkpoint_path(self.folder, self.name)
        self.results_path = run_files.results_path(self.folder, self.name)

    # ------------------------------------------------------------------ set-up
    def check_outputs(self) -> None:
        """Never overwrite what a user has computed without being told to."""
        args = self.args
        if args.resume:
            # the same command can be re-submitted after every pre-emption: the first time
            # there is nothing to resume and it simply starts
            return
        if args.force:
            return
        if self.results_path.is_file() or self.last_path.is_file():
            finished = self.results_path.is_file() and \
                run_files.load_results(self.results_path).get("status") == "finished"
            state = "a finished result" if finished else "an unfinished run"
            raise UsageError(f"{state} of this configuration exists in {self.folder}; "
                             f"add --resume to continue it or --force to start over")

    def check_writable(self) -> None:
        path = Path(self.args.data)
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise UsageError(f"--data {path}: {probe} is a file, not a folder; choose another --data")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise UsageError(f"--data {path} is not writable; choose another folder with --data")

    def prepare_data(self) -> None:
        args, settings = self.args, self.settings
        if self.data is None:
            self.data = load_data(settings, args.data)
        if settings.folder is not None:
            from custom_datasets.folder import describe
            print(describe(settings), file=sys.stderr)
        if getattr(self.data, "test_is_valid", False):
            print(f"note: {settings.folder} has no test/ folder: test accuracies are measured on "
                  f"valid/, which the hyperparameters are fitted to", file=sys.stderr)
        fixed_valid = getattr(self.data, "valid_indices", None)
        official = self.data.train_targets
        valid_size = valid_size_for(len(official), settings.train_size, settings.valid_size)
        try:
            check_split_feasible(official, settings.num_classes, valid_size, args.imbalance_ratio,
                                 args.subsample_ratio)
            self.split = load_or_create_split(self.folder, official, settings.num_classes,
                                              valid_size, args.imbalance_ratio,
                                              args.subsample_ratio, args.noise_ratio, args.seed,
                                              fixed_valid)
        except ValueError as error:
            raise UsageError(str(error)) from None
        # images of each true class in the train subset (the results file reports them too)
        self.train_class_counts = torch.bincount(official[self.split.train_indices],
                                                 minlength=settings.num_classes).tolist()
        empty = [label for label, count in enumerate(self.train_class_counts) if count == 0]
        if empty:
            print(f"note: class{'es' if len(empty) > 1 else ''} {', '.join(map(str, empty))} "
                  f"{'have' if len(empty) > 1 else 'has'} no train image with -ir {args.imbalance_ratio} "
                  f"-sr {args.subsample_ratio}", file=sys.stderr)
        self.split_seed = args.seed
        if not made_with_seed(self.split, official, settings.num_classes, valid_size,
                              args.imbalance_ratio, args.subsample_ratio, args.noise_ratio, args.seed,
                              fixed_valid):
            self.split_seed = None
            self.check_foreign_split()

    def check_foreign_split(self) -> None:
        """The run folder's split file is not the one args.seed makes. Every configuration of
        a run folder trains on its one split, so a seed of its own is refused; a file that
        no run here made (another version or program) is used as it is, with a note."""
        args = self.args
        split_name = run_files.split_file_name(args.imbalance_ratio, args.subsample_ratio,
                                               args.noise_ratio)
        fix = f"give seed {args.seed} a run folder of its own (-r)"
        recorded = self.recorded_split_seed()
        if recorded is not None:
            raise UsageError(f"{split_name} in {self.folder} was made with seed {recorded} (its other "
                             f"results files say so), not {args.seed}: add --seed {recorded} to "
                             f"train on it, or {fix}")
        if args.seed != run_files.seed_from_run_folder(args.run_folder):
            raise UsageError(f"--seed {args.seed}: {split_name} in {self.folder} was made with "
                             f"another seed, and every configuration of a run folder trains on "
                             f"its one split; {fix}")
        print(f"note: {split_name} in {self.folder} is not the split seed {args.seed} makes here "
              f"and no results file here records its seed (another version or program made "
              f"it); training on it as it is", file=sys.stderr)

    def recorded_split_seed(self) -> Optional[int]:
        """The split seed that another configuration's results file in this run folder records
        for the same split file, if any does."""
        args = self.args
        wanted = (args.imbalance_ratio, args.subsample_ratio, args.noise_ratio)
        for path in sorted(self.folder.glob("results_*.json")):
            try:
                results = run_files.load_results(path)
            except run_files.UnreadableFile:
                continue
            config = results.get("config", {})
            seed = results.get("split_seed")
            if isinstance(seed, int) and wanted == tuple(
                    config.get(key) for key in ("imbalance_ratio", "subsample_ratio", "noise_ratio")):
                return seed
        return None

    def build_batches(self) -> None:
        args, settings, device, split = self.args, self.settings, self.device, self.split
        from custom_transforms.policies import make_policy_augment
        policy = make_policy_augment(args.aug_model, settings,
                                     bilinear_grey="bilinear-grey" in args.policy_variant)
        self.train_transform = TrainTransform(settings, policy,
                                              policy_after_crop="after-crop" in args.policy_variant)
        eval_transform = EvalTransform(settings)
        train_indices, valid_indices = split.train_indices, split.valid_indices
        if args.oversplit:
            train_indices = valid_indices = torch.arange(self.data.num_train)
        noisy_labels, official_labels = split.train_targets, self.data.train_targets

        if isinstance(self.data, InMemoryData):
            train_images = self.data.train_images.to(device)
            test_images = self.data.test_images.to(device)
            test_labels = self.data.test_targets.to(device)
            noisy_labels, official_labels = noisy_labels.to(device), official_labels.to(device)

            def batches(images, labels, indices, size, shuffle, transform, drop_last=False):
                return DeviceBatches(images, labels, indices, size, shuffle, transform, drop_last,
                                     self.permutations, self.collectives)
            train_source, test_source = train_images, test_images
            valid_source = train_source
        else:
            test_labels = self.data.test_targets

            def batches(dataset, labels, indices, size, shuffle, transform, drop_last=False):
                return FolderBatches(dataset, labels, indices, size, shuffle, transform, device,
                                     args.workers, drop_last, self.permutations, self.collectives)
            train_source, test_source = self.data.train, self.data.test
            valid_source = self.data.train_plain if "valid" in args.paper_text else train_source

        # the released code draws the valid batches of hyper steps from the train dataset
        # object, so they carry the train transforms (labels stay the official ones)
        valid_transform = eval_transform if "valid" in args.paper_text else self.train_transform
        # and its valid and hyper loaders drop a short last batch, as the train loader does
        drop_short = "last-batch" not in args.paper_text
        test_indices = torch.arange(len(self.data.test_targets))
        self.train_batches = batches(train_source, noisy_labels, train_indices, settings.batch_size,
                                     True, self.train_transform, drop_last=True)
        self.hyper_batches = batches(train_source, noisy_labels, train_indices,
                                     settings.hyper_batch_size, True, self.train_transform, drop_short)
        if args.overfit:
            self.valid_batches = batches(test_source, test_labels, test_indices,
                                         settings.hyper_batch_size, True, eval_transform, drop_short)
        else:
            self.valid_batches = batches(valid_source, official_labels, valid_indices,
                                         settings.hyper_batch_size, True, valid_transform, drop_short)
        self.test_batches = batches(test_source, test_labels, test_indices,
                                    self.compute_path.test_batch_size, False, eval_transform)

    def build_models(self) -> None:
        args, settings, device = self.args, self.settings, self.device
        encoder, decoder = build_network(args.model, settings, "wrn-block" in args.paper_text)
        encoder, decoder = encoder.to(device), decoder.to(device)
        if self.compute_path.channels_last:
            encoder = encoder.to(memory_format=torch.channels_last)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.encoder, self.decoder = encoder, decoder
        self.network = Network(encoder, decoder, amp=self.compute_path.amp,
                               fold_batch_norm=self.compute_path.fold_batch_norm,
                               compile=self.compute_path.compile)
        if self.collectives.world_size > 1:
            # batch norm stays per rank (see average_buffers; SyncBatchNorm needs GPUs)
            self.network.distributed = torch.nn.parallel.DistributedDataParallel(
                Classifier(self.network), device_ids=[device.index] if device.type == "cuda" else None,
                forward_sync_buffers=False)
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=args.lr, momentum=0.9,
                                         nesterov=True, weight_decay=1e-4)
        # a user's own folder is taken to be noisy and imbalanced already (DESIGN §3.1)
        distorted = args.imbalance_ratio != 1 or args.noise_ratio != 0 or \
            self.settings.folder is not None
        num_train = self.data.num_train
        self.loss_model = LossModel(num_train, settings.num_classes, args.los_model,
                                    self.split.train_targets, distorted, device)
        self.augment_model = None
        if args.aug_model in LEARNED_AUGMENT_MODELS:
            self.augment_model = AugmentModel(num_train, args.aug_model, device)
        hyper_optimizer = None
        if args.hyper_opt == "HES":
            tables = dict(self.loss_model.learned_tables())
            if self.augment_model is not None:
                tables.update(self.augment_model.learned_tables())
            hyper_optimizer = RowRMSprop(tables, lr=args.hyper_beta, alpha=args.hyper_gamma)
        resampling = Resampling(matrix_at_warp_size="geometry" in args.paper_text,
                                average_pool_back="downsample" in args.paper_text)
        self.hyper = HyperState(self.loss_model, self.augment_model, hyper_optimizer,
                                args.hyper_iters, args.hyper_alpha, resampling=resampling,
                                resample_every_configuration="baselines" not in args.paper_text,
                                collectives=self.collectives)

    # ------------------------------------------------------------------ state
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
                      "best": self.best, "history": self.history,
                      "hyper_diagnostics": self.diagnostics, "timings_s": self.timings,
                      "compute_path": self.compute_path.record(),
                      # no RNG states: every epoch reseeds from (seed, epoch), see seed_epoch
                      "config": self.config()})
        run_files.save_torch(state, self.last_path)

    def load_last(self) -> int:
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
        return first_epoch

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
                "config": self.config(), "lr_changes": self.lr_changes,
                "epochs": self.args.epochs, "epochs_done": len(self.history),
                "best": self.best, "final": final, "history": self.history,
                "hyper_diagnostics": self.diagnostics, "learned": learned,
                "split": {"train_size": len(split.train_indices),
                          "valid_size": len(split.valid_indices), "noisy_labels": noisy,
                          "train_class_counts": self.train_class_counts},
                "test_set": "valid" if getattr(self.data, "test_is_valid", False) else "test",
                "timings_s": self.timings, "compute_path": self.compute_path.record(),
                "versions": versions(self.device)}

    # ------------------------------------------------------------------ loop
    def run(self) -> Dict:
        self.check_world_size()
        with ExitStack() as held:
            def claim():
                self.check_writable()
                # Before the look at the outputs, which a running process is writing. (Not
                # inside the lock: a POSIX lock is the process's, and looking would release it.)
                holder = run_files.lock_holder(self.folder, self.name)
                if holder is not None:
                    raise UsageError(self.busy_message(
                        f"{holder} is training this configuration in {self.folder}"))
                self.check_outputs()
                self.prepare_data()
                try:
                    held.enter_context(run_files.configuration_lock(self.folder, self.name))
                except run_files.ConfigurationBusy as busy:
                    raise UsageError(self.busy_message(str(busy))) from None
                self.check_outputs()  # the process that held the lock may have finished it
            # rank 0 takes the lock and writes the split; the others then read it
            main_first(self.collectives, claim)
            if not self.is_main:
                self.prepare_data()
            return self.train()

    def check_world_size(self) -> None:
        world_size, batch_size = self.collectives.world_size, self.settings.batch_size
        if batch_size % world_size:
            raise UsageError(f"{world_size} processes: the train batch of {self.settings.name} "
                             f"({batch_size}) does not divide among them; use a number of "
                             f"processes that divides {batch_size}")

    @staticmethod
    def busy_message(who: str) -> str:
        return f"{who}; wait for it to finish, or give this one its own run folder (-r)"

    def train(self) -> Dict:
        args = self.args
        if self.device.type == "cpu" and not args.no_cuda and self.is_main:
            print(cpu_fallback_note(args), file=sys.stderr)
        # on stdout, the run's log: stderr is for notes and errors
        print(self.compute_path.describe(), flush=True)
        self.history = []
        writer = None
        try:
            # A stop during the set-up takes effect once a resumed run's state is loaded, so
            # it leaves what a stop during training leaves: an "interrupted" results file
            # that agrees with the last_ checkpoint (even where a killed attempt left none).
            with deferred_stops():
                first_epoch, writer = self.set_up_training()
            quiet = not sys.stderr.isatty()
            epochs = tqdm(range(first_epoch, args.epochs), desc=self.name[:40],
                          disable=quiet or not self.is_main, initial=first_epoch, total=args.epochs)
            for epoch in epochs:
                final = self.run_epoch(epoch, writer)
                epochs.set_postfix(acc=f"{final['test_acc']:.2f}", best=f"{self.best['acc']:.2f}")
                if quiet:
                    print(f"epoch {epoch + 1}/{args.epochs}  test acc {final['test_acc']:.2f}%  "
                          f"loss {final['test_loss']:.4f}  best {self.best['acc']:.2f}% "
                          f"(epoch {self.best['epoch'] + 1})", flush=True)
        except KeyboardInterrupt:
            self.save_stopped_results("interrupted")
            raise
        except RuntimeError as error:
            if peer_stopped(error):
                # another rank died: the last finished epoch's checkpoint is intact
                self.save_stopped_results("interrupted")
            raise
        except FloatingPointError as error:
            self.save_stopped_results("failed")
            raise FloatingPointError(f"{error}; {self.how_to_recover()}") from None
        finally:
            if writer is not None:
                writer.close()
        results = self.results("finished", self.final_metrics())
        if self.is_main:
            run_files.save_json(results, self.results_path)
        return results

    def set_up_training(self):
        """Batches, networks, optimisers and, on --resume, the last_ checkpoint's state;
        returns the first epoch to train and the tensorboard writer (None: nothing to log)."""
        args = self.args
        self.build_batches()
        seed_epoch(args.seed, -1)  # initial weights
        self.build_models()
        self.best = {"epoch": -1, "acc": 0.0}
        self.history, self.diagnostics, self.lr_changes = [], [], []
        self.timings = {"hyper": 0.0, "train": 0.0, "test": 0.0, "total": 0.0}
        first_epoch = self.load_last() if args.resume and self.last_path.is_file() else 0
        if args.resume and first_epoch == 0:
            print(f"--resume: no {self.last_path.name} yet, starting from epoch 1", file=sys.stderr)
        if first_epoch >= args.epochs:
            print(f"nothing to train: this configuration finished its {args.epochs} epochs "
                  f"(add --force to train it again)", file=sys.stderr)
        if args.plot_debug and first_epoch == 0 and self.is_main:
            from custom_runs.augment_grid import save_augmentation_grid
            save_augmentation_grid(self, run_files.debug_grid_path(self.folder, self.name))
        from torch.utils.tensorboard import SummaryWriter
        # a finished configuration gets no new (empty) event file
        writer = SummaryWriter(str(run_files.tensorboard_dir(self.folder, self.name)),
                               purge_step=first_epoch) \
            if first_epoch < args.epochs and self.is_main else None
        return first_epoch, writer

    def save_stopped_results(self, status: str) -> None:
        """The results file of a run that stopped early says so (its epochs stay usable).
        A second Ctrl-C or SIGTERM waits until the file is written."""
        if not self.history or not self.is_main:
            return
        if len(self.history) >= self.args.epochs:  # stopped after its last epoch was saved
            status = "finished"
        with deferred_stops():
            run_files.save_json(self.results(status, self.final_metrics()), self.results_path)

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

    def run_epoch(self, epoch: int, writer) -> Dict:
        args, started = self.args, time.perf_counter()
        seed_epoch(args.seed, epoch, self.permutations, self.collectives.rank)
        record = {"epoch": epoch, "hyper_lr": None}
        if args.hyper_opt == "HES" and epoch > args.hyper_start:
            steps = len(self.hyper_batches) if not args.hyper_steps else \
                min(args.hyper_steps, len(self.hyper_batches))
            first_hyper_epoch = 0 if "warmup" in args.paper_text else 1

            def set_hyper_lr(step):
                return hyper_learning_rate(args.hyper_beta, epoch, args.hyper_start, args.epochs, step,
                                           steps, args.lr_warm_epochs, first_hyper_epoch)
            stats = hyper_epoch(self.network, self.hyper, self.hyper_batches,
                                cycle(self.valid_batches), set_hyper_lr, args.hyper_steps)
            record["hyper_lr"] = self.hyper.optimizer.lr
            self.diagnostics.append({"epoch": epoch, "g_norm_sq": stats.g_norm_sq,
                                     "v_norm_sq": stats.v_norm_sq, "g_dot_v": stats.g_dot_v,
                                     "divergence": stats.divergence, "skipped": stats.skipped})
            for key in ("g_norm_sq", "v_norm_sq", "g_dot_v", "divergence"):
                if writer is not None:
                    writer.add_scalar(f"hyper/{key}", self.diagnostics[-1][key], epoch)
        after_hyper = time.perf_counter()

        batches_per_epoch = len(self.train_batches)

        def set_lr(batch):
            rate = learning_rate(args.lr, epoch, batch, batches_per_epoch, args.epochs,
                                 args.lr_warm_epochs, args.lr_decay_rate, args.lr_decay_epochs)
            for group in self.optimizer.param_groups:
                group["lr"] = rate
            return rate
        bar = tqdm(total=batches_per_epoch, desc=f"epoch {epoch + 1}", leave=False,
                   disable=not sys.stderr.isatty() or not self.is_main)

        def progress(done, running_loss):
            bar.update(done - bar.n)
            bar.set_postfix(loss=f"{float(running_loss):.4f}")
        train_loss = float(train_one_epoch(self.network, self.hyper, self.train_batches,
                                           self.optimizer, set_lr, progress, args.log_interval))
        bar.close()
        average_buffers(self.encoder, self.collectives)
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        after_train = time.perf_counter()
        test = evaluate(self.network, self.test_batches, self.settings.num_classes, self.collectives)
        after_test = time.perf_counter()

        record.update({"train_loss": train_loss, "test_acc": test["acc"], "test_loss": test["loss"],
                       "per_class_acc": test["per_class_acc"]})
        self.history.append(record)
        for key, value in (("hyper", after_hyper - started), ("train", after_train - after_hyper),
                           ("test", after_test - after_train)):
            self.timings[key] += value
        if check_tables_requested():
            check_identical(self.collectives, self.synchronised_state(), f"epoch {epoch + 1}")
        new_best = test["acc"] > self.best["acc"] or self.best["epoch"] < 0
        if new_best:
            self.best = {"epoch": epoch, "acc": test["acc"], "loss": test["loss"],
                         "per_class_acc": test["per_class_acc"],
                         "minority_acc": minority_accuracy(test["per_class_acc"], self.settings)}
        self.timings["total"] += time.perf_counter() - started
        if not self.is_main:  # every rank holds the same state: rank 0 writes it
            return record
        if new_best:
            run_files.save_torch(self.checkpoint(epoch, test["acc"]), self.best_path)
        self.save_last(epoch)
        learned = learned_summary(self.loss_model, self.augment_model, self.split,
                                  self.data.train_targets, self.settings)
        run_files.save_json(self.results("running", self.final_metrics(), learned), self.results_path)
        writer.add_scalar("test/accuracy", test["acc"], epoch)
        writer.add_scalar("test/loss", test["loss"], epoch)
        writer.add_scalar("train/loss", train_loss, epoch)
        writer.add_scalar("train/lr", record["lr"], epoch)
        for key, value in learned.items():
            if value is not None:
                writer.add_scalar(f"learned/{key}", value, epoch)
        return record

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
