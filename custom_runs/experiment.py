"""One configuration of one run, start to finish (docs/design.md §2-§8): the loop over its epochs.
The steps it calls live beside it: set_up.py (checks, the lock, the split), builders.py
(the device, batches, networks and hyperparameter models) and run_state.py (seeds,
checkpoints, the results file); stop_points.py is a hook for tests."""
import sys
import time
from contextlib import ExitStack, contextmanager
from typing import Dict

import torch
from tqdm import tqdm

from custom_common.collectives import SINGLE_PROCESS, Collectives
from custom_datasets.batches import cycle
from custom_models.schedule import hyper_learning_rate, learning_rate
from custom_models.training import average_buffers, evaluate, hyper_epoch, train_one_epoch
from custom_runs import run_files, stop_points
from custom_runs.builders import Builders, cpu_fallback_note, select_device
from custom_runs.compute_path import choose_compute_path
from custom_runs.distributed import check_identical, check_tables_requested, main_first, peer_stopped
from custom_runs.options import dataset_settings
from custom_runs.run_state import RunState, seed_epoch
from custom_common.signals import deferred_stops
from custom_runs.set_up import SetUp


class Experiment(SetUp, Builders, RunState):
    def __init__(self, args, data=None, collectives: Collectives = SINGLE_PROCESS):
        """`data` (InMemoryData) replaces the dataset's files, e.g. random images in benchmarks;
        `collectives`: this process's rank among the processes of a torchrun launch."""
        self.args = args
        self.data = data
        self.collectives = collectives
        self.is_main = collectives.is_main
        self.stop_at = stop_points.requested()
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
        self.best_valid_path = run_files.best_valid_checkpoint_path(self.folder, self.name)
        self.last_path = run_files.last_checkpoint_path(self.folder, self.name)
        self.results_path = run_files.results_path(self.folder, self.name)

    def run(self) -> Dict:
        self.check_world_size()
        with ExitStack() as held:  # the configuration's lock, until the run ends
            # rank 0 takes the lock and writes the split; the others then read it
            main_first(self.collectives, lambda: self.claim(held))
            if not self.is_main:
                self.prepare_data()
            return self.train()

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
                          f"loss {final['test_loss']:.4f}  valid acc {final['valid_acc']:.2f}%  "
                          f"best {self.best['acc']:.2f}% (epoch {self.best['epoch'] + 1})",
                          flush=True)
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
        except run_files.SaveFailed:
            self.mark_results_interrupted()
            raise
        finally:
            if writer is not None:
                writer.close()
        results = self.results("finished", self.final_metrics())
        if self.is_main:
            run_files.save_json(results, self.results_path)
        return results

    def run_epoch(self, epoch: int, writer) -> Dict:
        args, started = self.args, time.perf_counter()
        seed_epoch(args.seed, epoch, self.permutations, self.collectives.rank)
        record = {"epoch": epoch, "hyper_lr": None}
        if args.hyper_opt == "HES" and epoch > args.hyper_start:
            record["hyper_lr"] = self.run_hyper_epoch(epoch, writer)
        after_hyper = time.perf_counter()
        with self.progress_bar(epoch) as progress:
            train_loss = float(train_one_epoch(self.network, self.hyper, self.train_batches,
                                               self.optimizer, lambda batch: self.set_lr(epoch, batch),
                                               progress, args.log_interval))
        average_buffers(self.encoder, self.collectives)
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        after_train = time.perf_counter()
        test = evaluate(self.network, self.test_batches, self.settings.num_classes, self.collectives)
        after_test = time.perf_counter()
        valid = test if self.selection_batches is None else \
            evaluate(self.network, self.selection_batches, self.settings.num_classes, self.collectives)
        after_valid = time.perf_counter()

        record.update({"train_loss": train_loss, "test_acc": test["acc"], "test_loss": test["loss"],
                       "valid_acc": valid["acc"], "valid_loss": valid["loss"],
                       "per_class_acc": test["per_class_acc"]})
        self.history.append(record)
        for key, value in (("hyper", after_hyper - started), ("train", after_train - after_hyper),
                           ("test", after_test - after_train), ("valid", after_valid - after_test)):
            self.timings[key] += value
        if check_tables_requested():
            # the model selection too: every rank must choose the same epochs
            measured = {key: torch.tensor(record[key], dtype=torch.float64)
                        for key in ("test_acc", "test_loss", "valid_acc", "valid_loss")}
            check_identical(self.collectives, {**self.synchronised_state(), **measured},
                            f"epoch {epoch + 1}")
        new_best = self.update_best(epoch, test)
        new_best_valid = self.update_best_valid(epoch, test, valid)
        self.timings["total"] += time.perf_counter() - started
        if not self.is_main:  # every rank holds the same state: rank 0 writes it
            return record
        learned = self.save_epoch(epoch, test["acc"], new_best, new_best_valid)
        self.log_epoch(writer, epoch, record, learned)
        return record

    # ------------------------------------------------------------------ the loop's steps
    def set_up_training(self):
        """Batches, networks, optimisers and, on --resume, the last_ checkpoint's state;
        returns the first epoch to train and the tensorboard writer (None: nothing to log)."""
        args = self.args
        self.build_batches()
        seed_epoch(args.seed, -1)  # initial weights
        self.build_models()
        self.start_state()
        first_epoch = self.load_last() if args.resume and self.last_path.is_file() else 0
        self.begin_attempt(first_epoch)
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

    def run_hyper_epoch(self, epoch: int, writer) -> float:
        """The hyperparameter steps of an epoch; returns their last learning rate."""
        args = self.args
        steps = len(self.hyper_batches) if not args.hyper_steps else \
            min(args.hyper_steps, len(self.hyper_batches))
        first_hyper_epoch = 0 if "warmup" in args.paper_text else 1

        def set_hyper_lr(step):
            return hyper_learning_rate(args.hyper_beta, epoch, args.hyper_start, args.epochs, step,
                                       steps, args.lr_warm_epochs, first_hyper_epoch)
        stats = hyper_epoch(self.network, self.hyper, self.hyper_batches,
                            cycle(self.valid_batches), set_hyper_lr, args.hyper_steps)
        self.diagnostics.append({"epoch": epoch, "g_norm_sq": stats.g_norm_sq,
                                 "v_norm_sq": stats.v_norm_sq, "g_dot_v": stats.g_dot_v,
                                 "divergence": stats.divergence, "skipped": stats.skipped})
        for key in ("g_norm_sq", "v_norm_sq", "g_dot_v", "divergence"):
            if writer is not None:
                writer.add_scalar(f"hyper/{key}", self.diagnostics[-1][key], epoch)
        return self.hyper.optimizer.lr

    def set_lr(self, epoch: int, batch: int) -> float:
        """The network's learning rate for a batch (and the tests' stop point, see stop_points)."""
        stop_points.stop_if_asked(self.stop_at, (epoch, batch), self.collectives.rank)
        args = self.args
        rate = learning_rate(args.lr, epoch, batch, len(self.train_batches), args.epochs,
                             args.lr_warm_epochs, args.lr_decay_rate, args.lr_decay_epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        return rate

    @contextmanager
    def progress_bar(self, epoch: int):
        """A progress bar of the epoch's batches on a terminal; yields train_one_epoch's
        `progress` callback."""
        bar = tqdm(total=len(self.train_batches), desc=f"epoch {epoch + 1}", leave=False,
                   disable=not sys.stderr.isatty() or not self.is_main)

        def progress(done, running_loss):
            bar.update(done - bar.n)
            bar.set_postfix(loss=f"{float(running_loss):.4f}")
        yield progress
        bar.close()

    @staticmethod
    def log_epoch(writer, epoch: int, record: Dict, learned: Dict) -> None:
        writer.add_scalar("test/accuracy", record["test_acc"], epoch)
        writer.add_scalar("test/loss", record["test_loss"], epoch)
        writer.add_scalar("valid/accuracy", record["valid_acc"], epoch)
        writer.add_scalar("valid/loss", record["valid_loss"], epoch)
        writer.add_scalar("train/loss", record["train_loss"], epoch)
        writer.add_scalar("train/lr", record["lr"], epoch)
        for key, value in learned.items():
            if value is not None:
                writer.add_scalar(f"learned/{key}", value, epoch)
