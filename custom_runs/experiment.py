"""One configuration of one run, start to finish (docs/design.md §2-§8): the loop over its epochs.
It reads the four values of custom_runs/run_values.py, built beside it: the plan and the
prepared data by set_up.py (with the checks, the lock and the split), the parts by
builders.py, the record by run_state.py (which also writes the run's files);
stop_points.py is a hook for tests."""
import sys
import time
from contextlib import ExitStack, contextmanager
from typing import Dict, Optional

import torch
from tqdm import tqdm

from custom_common.collectives import SINGLE_PROCESS, Collectives
from custom_common.signals import deferred_stops
from custom_datasets.batches import cycle
from custom_models.schedule import hyper_learning_rate, learning_rate
from custom_models.training import average_buffers, evaluate, hyper_epoch, train_one_epoch
from custom_runs import builders, run_files, run_state, set_up, stop_points
from custom_runs.distributed import check_identical, check_tables_requested, main_first, peer_stopped
from custom_runs.run_values import PreparedData, RunParts, RunRecord


class Experiment:
    def __init__(self, args, data=None, collectives: Collectives = SINGLE_PROCESS):
        """`data` (InMemoryData) replaces the dataset's files, e.g. random images in benchmarks;
        `collectives`: this process's rank among the processes of a torchrun launch."""
        self.plan = set_up.plan_run(args, collectives)
        self.data = data
        # set by run(): the split data, then what trains on it and what its epochs leave
        self.prepared: Optional[PreparedData] = None
        self.parts: Optional[RunParts] = None
        self.record: Optional[RunRecord] = None

    def run(self) -> Dict:
        plan = self.plan
        set_up.check_world_size(plan)
        with ExitStack() as held:  # the configuration's lock, until the run ends
            # rank 0 takes the lock and writes the split; the others then read it
            def claim():
                self.prepared = set_up.claim(plan, held, self.data)
            main_first(plan.collectives, claim)
            if not plan.is_main:
                self.prepared = set_up.prepare_data(plan, self.data)
            return self.train()

    def train(self) -> Dict:
        plan, args = self.plan, self.plan.args
        if plan.device.type == "cpu" and not args.no_cuda and plan.is_main:
            print(builders.cpu_fallback_note(args), file=sys.stderr)
        # on stdout, the run's log: stderr is for notes and errors
        print(plan.compute_path.describe(), flush=True)
        self.record = record = run_state.start_record(run_state.run_config(plan))
        writer = None
        try:
            # A stop during the set-up takes effect once a resumed run's state is loaded, so
            # it leaves what a stop during training leaves: an "interrupted" results file
            # that agrees with the last_ checkpoint (even where a killed attempt left none).
            with deferred_stops():
                first_epoch, writer = self.set_up_training()
            quiet = not sys.stderr.isatty()
            epochs = tqdm(range(first_epoch, args.epochs), desc=plan.name[:40],
                          disable=quiet or not plan.is_main, initial=first_epoch, total=args.epochs)
            for epoch in epochs:
                final = self.run_epoch(epoch, writer)
                epochs.set_postfix(acc=f"{final['test_acc']:.2f}", best=f"{record.best['acc']:.2f}")
                if quiet:
                    print(f"epoch {epoch + 1}/{args.epochs}  test acc {final['test_acc']:.2f}%  "
                          f"loss {final['test_loss']:.4f}  valid acc {final['valid_acc']:.2f}%  "
                          f"best {record.best['acc']:.2f}% (epoch {record.best['epoch'] + 1})",
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
            raise FloatingPointError(f"{error}; {run_state.how_to_recover(plan, record)}") from None
        except run_files.SaveFailed:
            run_state.mark_results_interrupted(plan)
            raise
        finally:
            if writer is not None:
                writer.close()
        results = run_state.results(plan, self.prepared, self.parts.models, record, "finished",
                                    run_state.final_metrics(record, plan.settings))
        if plan.is_main:
            run_files.save_json(results, plan.results_path)
        return results

    def save_stopped_results(self, status: str) -> None:
        run_state.save_stopped_results(self.plan, self.prepared, self.parts, self.record, status)

    def run_epoch(self, epoch: int, writer) -> Dict:
        plan, prepared, parts, record = self.plan, self.prepared, self.parts, self.record
        args, batches, models = plan.args, parts.batches, parts.models
        started = time.perf_counter()
        run_state.seed_epoch(args.seed, epoch, parts.permutations, plan.collectives.rank)
        epoch_record = {"epoch": epoch, "hyper_lr": None}
        if args.hyper_opt == "HES" and epoch > args.hyper_start:
            epoch_record["hyper_lr"] = self.run_hyper_epoch(epoch, writer)
        after_hyper = time.perf_counter()
        with self.progress_bar(epoch) as progress:
            train_loss = float(train_one_epoch(models.network, models.hyper, batches.train,
                                               models.optimizer, lambda batch: self.set_lr(epoch, batch),
                                               progress, args.log_interval))
        average_buffers(models.encoder, plan.collectives)
        epoch_record["lr"] = models.optimizer.param_groups[0]["lr"]
        after_train = time.perf_counter()
        num_classes = plan.settings.num_classes
        test = evaluate(models.network, batches.test, num_classes, plan.collectives)
        after_test = time.perf_counter()
        valid = test if batches.selection is None else \
            evaluate(models.network, batches.selection, num_classes, plan.collectives)
        after_valid = time.perf_counter()

        epoch_record.update({"train_loss": train_loss, "test_acc": test["acc"],
                             "test_loss": test["loss"], "valid_acc": valid["acc"],
                             "valid_loss": valid["loss"], "per_class_acc": test["per_class_acc"]})
        record.history.append(epoch_record)
        for key, value in (("hyper", after_hyper - started), ("train", after_train - after_hyper),
                           ("test", after_test - after_train), ("valid", after_valid - after_test)):
            record.timings[key] += value
        if check_tables_requested():
            # the model selection too: every rank must choose the same epochs
            measured = {key: torch.tensor(epoch_record[key], dtype=torch.float64)
                        for key in ("test_acc", "test_loss", "valid_acc", "valid_loss")}
            check_identical(plan.collectives, {**run_state.synchronised_state(models), **measured},
                            f"epoch {epoch + 1}")
        new_best = run_state.update_best(record, plan.settings, epoch, test)
        new_best_valid = run_state.update_best_valid(record, plan.settings, epoch, test, valid)
        record.timings["total"] += time.perf_counter() - started
        if not plan.is_main:  # every rank holds the same state: rank 0 writes it
            return epoch_record
        learned = run_state.save_epoch(plan, prepared, models, record, epoch, test["acc"],
                                       new_best, new_best_valid)
        self.log_epoch(writer, epoch, epoch_record, learned)
        return epoch_record

    # ------------------------------------------------------------------ the loop's steps
    def set_up_training(self):
        """Batches, networks, optimisers and, on --resume, the last_ checkpoint's state;
        returns the first epoch to train and the tensorboard writer (None: nothing to log)."""
        plan, args, record = self.plan, self.plan.args, self.record
        self.parts = parts = builders.build_parts(plan, self.prepared)
        first_epoch = run_state.load_last(plan, parts.models, record) \
            if args.resume and plan.last_path.is_file() else 0
        run_state.begin_attempt(plan, record, first_epoch)
        if args.resume and first_epoch == 0:
            print(f"--resume: no {plan.last_path.name} yet, starting from epoch 1", file=sys.stderr)
        if first_epoch >= args.epochs:
            print(f"nothing to train: this configuration finished its {args.epochs} epochs "
                  f"(add --force to train it again)", file=sys.stderr)
        if args.plot_debug and first_epoch == 0 and plan.is_main:
            from custom_runs.augment_grid import save_augmentation_grid
            save_augmentation_grid(plan, self.prepared, parts,
                                   run_files.debug_grid_path(plan.folder, plan.name))
        from torch.utils.tensorboard import SummaryWriter
        # a finished configuration gets no new (empty) event file
        writer = SummaryWriter(str(run_files.tensorboard_dir(plan.folder, plan.name)),
                               purge_step=first_epoch) \
            if first_epoch < args.epochs and plan.is_main else None
        return first_epoch, writer

    def run_hyper_epoch(self, epoch: int, writer) -> float:
        """The hyperparameter steps of an epoch; returns their last learning rate."""
        args, batches, models = self.plan.args, self.parts.batches, self.parts.models
        steps = len(batches.hyper) if not args.hyper_steps else \
            min(args.hyper_steps, len(batches.hyper))
        first_hyper_epoch = 0 if "warmup" in args.paper_text else 1

        def set_hyper_lr(step):
            return hyper_learning_rate(args.hyper_beta, epoch, args.hyper_start, args.epochs, step,
                                       steps, args.lr_warm_epochs, first_hyper_epoch)
        stats = hyper_epoch(models.network, models.hyper, batches.hyper, cycle(batches.valid),
                            set_hyper_lr, args.hyper_steps)
        diagnostics = {"epoch": epoch, "g_norm_sq": stats.g_norm_sq, "v_norm_sq": stats.v_norm_sq,
                       "g_dot_v": stats.g_dot_v, "divergence": stats.divergence,
                       "skipped": stats.skipped}
        self.record.diagnostics.append(diagnostics)
        for key in ("g_norm_sq", "v_norm_sq", "g_dot_v", "divergence"):
            if writer is not None:
                writer.add_scalar(f"hyper/{key}", diagnostics[key], epoch)
        return models.hyper.optimizer.lr

    def set_lr(self, epoch: int, batch: int) -> float:
        """The network's learning rate for a batch (and the tests' stop point, see stop_points)."""
        plan, args = self.plan, self.plan.args
        stop_points.stop_if_asked(plan.stop_at, (epoch, batch), plan.collectives.rank)
        rate = learning_rate(args.lr, epoch, batch, len(self.parts.batches.train), args.epochs,
                             args.lr_warm_epochs, args.lr_decay_rate, args.lr_decay_epochs)
        for group in self.parts.models.optimizer.param_groups:
            group["lr"] = rate
        return rate

    @contextmanager
    def progress_bar(self, epoch: int):
        """A progress bar of the epoch's batches on a terminal; yields train_one_epoch's
        `progress` callback."""
        bar = tqdm(total=len(self.parts.batches.train), desc=f"epoch {epoch + 1}", leave=False,
                   disable=not sys.stderr.isatty() or not self.plan.is_main)

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
