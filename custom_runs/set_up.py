"""A run's set-up before training (docs/design.md §2, §8): its plan, the checks of its outputs and of
the data folder, the configuration's lock, the split, the refusal of a split made with another
seed, the world-size check, and the stops that wait until a step's files are consistent."""
import sys
from contextlib import ExitStack
from typing import Optional

import torch

from custom_common.collectives import SINGLE_PROCESS, Collectives
from custom_common.errors import UsageError
from custom_datasets.sources import load_data
from custom_datasets.split import (check_split_feasible, load_or_create_split, made_with_seed,
                                   valid_size_for)
from custom_runs import run_files, stop_points
from custom_runs.builders import select_device
from custom_runs.compute_path import choose_compute_path
from custom_runs.options import check_data_folder, dataset_settings
from custom_runs.run_values import PreparedData, RunPlan


def plan_run(args, collectives: Collectives = SINGLE_PROCESS) -> RunPlan:
    """What the run of `args` is to do, on this rank of `collectives`; raises UsageError."""
    stop_at = stop_points.requested()
    settings = dataset_settings(args)
    device = select_device(args)
    compute_path = choose_compute_path(device, args.no_amp, args.compile)
    folder = run_files.run_dir(args.data, settings.name, args.run_folder)
    name = run_files.run_name(args.model, args.hyper_opt, args.aug_model, args.los_model,
                              args.imbalance_ratio, args.subsample_ratio, args.noise_ratio,
                              args.overfit, args.oversplit, args.paper_text, args.policy_variant)
    return RunPlan(args=args, settings=settings, device=device, compute_path=compute_path,
                   collectives=collectives, stop_at=stop_at, folder=folder, name=name,
                   best_path=run_files.best_checkpoint_path(folder, name),
                   best_valid_path=run_files.best_valid_checkpoint_path(folder, name),
                   last_path=run_files.last_checkpoint_path(folder, name),
                   results_path=run_files.results_path(folder, name))


def check_world_size(plan: RunPlan) -> None:
    world_size, batch_size = plan.collectives.world_size, plan.settings.batch_size
    if batch_size % world_size:
        raise UsageError(f"{world_size} processes: the train batch of {plan.settings.name} "
                         f"({batch_size}) does not divide among them; use a number of "
                         f"processes that divides {batch_size}")


def claim(plan: RunPlan, held: ExitStack, data=None) -> PreparedData:
    """Rank 0's part of the set-up: the checks, the split, and the configuration's lock,
    which `held` keeps until the run ends; returns the prepared data."""
    check_data_folder(plan.args.data)
    # Before the look at the outputs, which a running process is writing. (Not
    # inside the lock: a POSIX lock is the process's, and looking would release it.)
    holder = run_files.lock_holder(plan.folder, plan.name)
    if holder is not None:
        raise UsageError(busy_message(f"{holder} is training this configuration in {plan.folder}"))
    check_outputs(plan)
    prepared = prepare_data(plan, data)
    try:
        held.enter_context(run_files.configuration_lock(plan.folder, plan.name))
    except run_files.ConfigurationBusy as busy:
        raise UsageError(busy_message(str(busy))) from None
    check_outputs(plan)  # the process that held the lock may have finished it
    remove_stale_temporaries(plan)
    return prepared


def remove_stale_temporaries(plan: RunPlan) -> None:
    """The temporary files of this configuration's files that a killed save left (a
    partial checkpoint may be as large as a whole one). Under the lock no other process
    writes them, so every one there is stale; the split's are not this configuration's."""
    stale = [tmp for path in (plan.best_path, plan.best_valid_path, plan.last_path,
                              plan.results_path, run_files.debug_grid_path(plan.folder, plan.name))
             for tmp in run_files.stale_temporaries(path)]
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    if stale:
        print(f"note: removed {len(stale)} temporary file{'s' * (len(stale) > 1)} that a "
              f"killed save of this configuration left in {plan.folder}", file=sys.stderr)


def busy_message(who: str) -> str:
    return f"{who}; wait for it to finish, or give this one its own run folder (-r)"


def check_outputs(plan: RunPlan) -> None:
    """Never overwrite what a user has computed without being told to."""
    args = plan.args
    if args.resume:
        # the same command can be re-submitted after every pre-emption: the first time
        # there is nothing to resume and it simply starts
        return
    if args.force:
        return
    if plan.results_path.is_file() or plan.last_path.is_file():
        finished = plan.results_path.is_file() and \
            run_files.finished(run_files.load_results(plan.results_path))
        state = "a finished result" if finished else "an unfinished run"
        raise UsageError(f"{state} of this configuration exists in {plan.folder}; "
                         f"add --resume to continue it or --force to start over")


def prepare_data(plan: RunPlan, data=None) -> PreparedData:
    """The data (`data`, InMemoryData, replaces the dataset's files, e.g. random images in
    benchmarks) and the run folder's split of it."""
    stop_points.stop_if_asked(plan.stop_at, ("setup", "prepare_data"), plan.collectives.rank)
    args, settings = plan.args, plan.settings
    if data is None:
        data = load_data(settings, args.data)
    if settings.folder is not None:
        from custom_datasets.folder import describe
        print(describe(settings), file=sys.stderr)
    if getattr(data, "test_is_valid", False):
        print(f"note: {settings.folder} has no test/ folder: test accuracies are measured on "
              f"valid/, which the hyperparameters are fitted to", file=sys.stderr)
    fixed_valid = getattr(data, "valid_indices", None)
    official = data.train_targets
    valid_size = valid_size_for(len(official), settings.train_size, settings.valid_size)
    try:
        check_split_feasible(official, settings.num_classes, valid_size, args.imbalance_ratio,
                             args.subsample_ratio)
        split = load_or_create_split(plan.folder, official, settings.num_classes, valid_size,
                                     args.imbalance_ratio, args.subsample_ratio,
                                     args.noise_ratio, args.seed, fixed_valid)
    except ValueError as error:
        raise UsageError(str(error)) from None
    # images of each true class in the train subset (the results file reports them too)
    train_class_counts = torch.bincount(official[split.train_indices],
                                        minlength=settings.num_classes).tolist()
    empty = [label for label, count in enumerate(train_class_counts) if count == 0]
    if empty:
        print(f"note: class{'es' if len(empty) > 1 else ''} {', '.join(map(str, empty))} "
              f"{'have' if len(empty) > 1 else 'has'} no train image with -ir {args.imbalance_ratio} "
              f"-sr {args.subsample_ratio}", file=sys.stderr)
    test_counts = torch.bincount(data.test_targets, minlength=settings.num_classes).tolist()
    untested = [str(label) for label, count in enumerate(test_counts) if count == 0]
    if untested:
        print(f"note: class{'es' if len(untested) > 1 else ''} {', '.join(untested)} "
              f"{'have' if len(untested) > 1 else 'has'} no test image: left out of the "
              f"per-class accuracy (null) and of the minority accuracy", file=sys.stderr)
    split_seed = args.seed
    if not made_with_seed(split, official, settings.num_classes, valid_size,
                          args.imbalance_ratio, args.subsample_ratio, args.noise_ratio, args.seed,
                          fixed_valid):
        split_seed = None
        check_foreign_split(plan)
    return PreparedData(data=data, split=split, split_seed=split_seed,
                        train_class_counts=train_class_counts)


def check_foreign_split(plan: RunPlan) -> None:
    """The run folder's split file is not the one args.seed makes. Every configuration of
    a run folder trains on its one split, so a seed of its own is refused; a file that
    no run here made (another version or program) is used as it is, with a note."""
    args, folder = plan.args, plan.folder
    split_name = run_files.split_file_name(args.imbalance_ratio, args.subsample_ratio,
                                           args.noise_ratio)
    fix = f"give seed {args.seed} a run folder of its own (-r)"
    recorded = recorded_split_seed(plan)
    if recorded == args.seed:
        # the seed is right, so the labels it was drawn from are not these: adding that
        # seed (the advice below) would only repeat this refusal
        where = f"the images of {plan.settings.folder}" if plan.settings.folder else "the data"
        raise UsageError(f"{split_name} in {folder} was made with seed {recorded} on "
                         f"other labels: {where} changed since (images moved to another "
                         f"class folder, added or removed), and the runs of {folder.name} "
                         f"trained on the earlier ones; train on the data as it is now in a "
                         f"new run folder, -r {next_run_folder(plan)}, or move "
                         f"{folder} away to start {folder.name} again")
    if recorded is not None:
        raise UsageError(f"{split_name} in {folder} was made with seed {recorded} (its other "
                         f"results files say so), not {args.seed}: add --seed {recorded} to "
                         f"train on it, or {fix}")
    if args.seed != run_files.seed_from_run_folder(args.run_folder):
        raise UsageError(f"--seed {args.seed}: {split_name} in {folder} was made with "
                         f"another seed, and every configuration of a run folder trains on "
                         f"its one split; {fix}")
    print(f"note: {split_name} in {folder} is not the split seed {args.seed} makes here "
          f"and no results file here records its seed (another version or program made "
          f"it); training on it as it is", file=sys.stderr)


def next_run_folder(plan: RunPlan) -> str:
    """runK after the highest runN of the dataset: the first name that holds no runs."""
    numbers = [int(folder.name[3:]) for folder in
               run_files.find_run_folders(plan.args.data, plan.settings.name)]
    return f"run{max(numbers, default=-1) + 1}"


def recorded_split_seed(plan: RunPlan) -> Optional[int]:
    """The split seed that another configuration's results file in this run folder records
    for the same split file, if any does."""
    args = plan.args
    wanted = (args.imbalance_ratio, args.subsample_ratio, args.noise_ratio)
    for path in sorted(plan.folder.glob("results_*.json")):
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
