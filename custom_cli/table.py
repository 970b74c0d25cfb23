"""Train a dataset's table (configurations x IR-NR settings x runs) and print it.

    python run-table.py --dataset DIGITS --settings 10-0.1 --runs 3 --epochs 100
    python run-table.py --dataset SVHN --gpus 0,1,2,3 --per-gpu 2
    python run-table.py --dataset CIFAR10 --launcher slurm --partition gpu --gpus-per-task 1 --time-min 240

Every run is `implicit-augment.py ... --resume` in a process of its own, its output in
{data}/{dataset}/runN/logs/{run_name}.log: a finished cell is skipped, an unfinished one
continues, so the same command after any interruption finishes the table. Options this
script does not know (--epochs, --model, --no-cuda, -sr, --hyper-start, ...) are passed
on to every run. See custom_runs/table/ (sweep.py, local.py, slurm.py).
"""
import argparse
import sys
from pathlib import Path

from custom_common.errors import UsageError
from custom_common.signals import deferred_stops, sigterm_as_interrupt
from custom_reports import run_reading, table_formats, tables
from custom_runs import run_files
from custom_runs.identity import load_paper_results, paper_methods
from custom_runs.table import processes, sweep
from custom_runs.table.local import local_slots, run_local
from custom_runs.table.outcomes import ELSEWHERE, FAILED, FINISHED, SKIPPED, Outcome, Progress
from custom_runs.table.slurm import (NeverStarts, QueueUnavailable, SlurmOptions, SlurmQueue,
                                     SubmissionFailed, accounting_works, make_executor,
                                     submit_array, wait_for_jobs)
from custom_runs.options import (OneLineErrorParser, at_least_one, check_all,
                                 check_data_folder, not_negative)


def build_parser() -> argparse.ArgumentParser:
    """The command's options, defaults and help."""
    # no abbreviations: an option this script does not know goes on to implicit-augment.py
    # whole, even where it begins like one of ours (--gpu and --gpus)
    parser = OneLineErrorParser(prog="run-table.py", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    methods = list(paper_methods())
    add("--data", default="./local_data", metavar="DIR",
        help="dataset files and run folders go under DIR/{dataset}/ (default: ./local_data)")
    add("--dataset", required=True, metavar="NAME", help="the dataset of the table")
    add("--configs", nargs="+", default=methods, choices=methods, metavar="NAME",
        help=f"rows, by the paper's names: {', '.join(methods)} (default: all)")
    add("--settings", nargs="+", default=None, metavar="IR-NR",
        help="columns, e.g. 100-0.1 1-0.0 (default: the paper's columns of the dataset; "
             f"datasets the paper has no table of: {' '.join(sweep.DEFAULT_SETTINGS)})")
    add("--runs", type=int, default=4, metavar="N", help="run folders run0 .. run{N-1} (default: 4)")
    add("--launcher", default="local", choices=("local", "slurm", "submitit-local"),
        help="local worker processes; slurm: one job array through submitit; submitit-local: "
             "the slurm path run on this machine by submitit's local executor (default: local)")
    add("--format", default="text", choices=table_formats.FORMATS, help="format of the final table (default: text)")
    local = parser.add_argument_group("local launcher")
    local.add_argument("--jobs", type=int, default=None, metavar="N",
                       help="CPU: N runs at a time, each with its share of the cores "
                            "(default: one one-thread run per core)")
    local.add_argument("--gpus", default=None, metavar="LIST",
                       help="CUDA devices to place runs on, e.g. 0,1,2,3 (CUDA_VISIBLE_DEVICES per run)")
    local.add_argument("--per-gpu", type=int, default=1, metavar="K",
                       help="runs at a time on each GPU (default: 1)")
    local.add_argument("--gpus-per-run", type=int, default=1, metavar="G",
                       help="each run on G GPUs through torchrun (default: 1)")
    slurm = parser.add_argument_group("slurm launcher (submitit)")
    slurm.add_argument("--partition", default=None, help="Slurm partition (default: the cluster's)")
    slurm.add_argument("--time-min", type=int, default=60, metavar="MIN",
                       help="time limit of each task in minutes; a task that reaches it is "
                            "requeued and resumes (default: 60)")
    slurm.add_argument("--gpus-per-task", type=int, default=0, metavar="G",
                       help="GPUs of each task; more than one runs it under torchrun (default: 0)")
    slurm.add_argument("--cpus-per-task", type=int, default=1, metavar="N",
                       help="CPU cores of each task, shared by its run's threads (split among its ranks with "
                            "several GPUs) (default: 1)")
    slurm.add_argument("--mem-gb", type=float, default=None, metavar="GB",
                       help="memory of each task in GB, more than 0 (default: the cluster's)")
    slurm.add_argument("--array-parallelism", type=int, default=64, metavar="N",
                       help="tasks of the array running at a time (default: 64)")
    slurm.add_argument("--account", default=None, help="Slurm account (default: none)")
    slurm.add_argument("--qos", default=None, help="Slurm QOS (default: none)")
    slurm.add_argument("--no-wait", action="store_true",
                       help="submit and return instead of showing progress until the array ends")
    return parser


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """The command line (`argv`, default: sys.argv) read by `parser`, checked: a bad
    option or an impossible setting is one error line and exit 2."""
    args, pass_through = parser.parse_known_args(argv)
    try:
        check(args, pass_through)
        args.specs = sweep.expand(args.dataset, args.data, args.configs,
                                  args.settings or sweep.default_settings(args.dataset), args.runs,
                                  pass_through)
    except UsageError as error:
        parser.error(str(error))
    return args


def get_args(argv=None) -> argparse.Namespace:
    """build_parser, then parse: the checked options of `argv`."""
    return parse(build_parser(), argv)


def check(args, pass_through) -> None:
    check_data_folder(args.data)
    try:
        args.gpus = [int(gpu) for gpu in args.gpus.split(",")] if args.gpus else []
    except ValueError:
        raise UsageError(f"--gpus: '{args.gpus}' is not a comma-separated list of device numbers "
                         f"such as 0,1,2,3") from None
    positive = [("--per-gpu", args.per_gpu), ("--gpus-per-run", args.gpus_per_run),
                ("--time-min", args.time_min), ("--cpus-per-task", args.cpus_per_task),
                ("--array-parallelism", args.array_parallelism)]
    check_all(at_least_one(flag, value)
              for flag, value in positive + ([("--jobs", args.jobs)] if args.jobs is not None else []))
    if args.gpus and "--no-cuda" in pass_through:
        raise UsageError("--gpus with --no-cuda: choose one")
    if args.gpus and args.jobs is not None:
        raise UsageError("--jobs is for the CPU; on GPUs the runs at a time are --per-gpu per GPU")
    if args.gpus_per_run > 1 and not args.gpus:
        raise UsageError(f"--gpus-per-run {args.gpus_per_run} needs --gpus")
    local_only = [flag for flag, given in (("--jobs", args.jobs is not None), ("--gpus", args.gpus),
                                           ("--per-gpu", args.per_gpu != 1),
                                           ("--gpus-per-run", args.gpus_per_run != 1)) if given]
    slurm_only = [flag for flag, given in (
        ("--partition", args.partition), ("--time-min", args.time_min != 60),
        ("--gpus-per-task", args.gpus_per_task), ("--cpus-per-task", args.cpus_per_task != 1),
        ("--mem-gb", args.mem_gb), ("--array-parallelism", args.array_parallelism != 64),
        ("--account", args.account), ("--qos", args.qos), ("--no-wait", args.no_wait)) if given]
    if args.launcher != "local" and local_only:
        raise UsageError(f"{', '.join(local_only)}: for the local launcher, not --launcher {args.launcher}")
    if args.launcher == "local" and slurm_only:
        raise UsageError(f"{', '.join(slurm_only)}: for --launcher slurm (or submitit-local)")
    check_all([not_negative("--gpus-per-task", args.gpus_per_task)])
    if args.mem_gb is not None and not args.mem_gb > 0:  # not NaN either
        raise UsageError(f"--mem-gb must be more than 0 (GB), got {args.mem_gb:g}")


def slurm_options(args) -> SlurmOptions:
    return SlurmOptions(args.partition, args.time_min, args.gpus_per_task, args.cpus_per_task,
                        args.mem_gb, args.array_parallelism, args.account, args.qos)


class StoppedFollowing(KeyboardInterrupt):
    """Ctrl-C or SIGTERM while following a Slurm job array: the array goes on without us."""

    def __init__(self, array: str):
        super().__init__(array)
        self.array = array


class StoppedSubmitting(KeyboardInterrupt):
    """Ctrl-C or SIGTERM before sbatch named the job array (sbatch itself may have got it)."""


def run_table(args) -> int:
    """Runs or submits every cell; returns 0 when every cell is finished."""
    specs = args.specs
    print(f"{len(specs)} runs: {len(dict.fromkeys(s.label for s in specs))} configurations x "
          f"{len(dict.fromkeys(s.config.setting for s in specs))} settings x {args.runs} runs "
          f"of {args.dataset} under {run_files.dataset_dir(args.data, specs[0].dataset)}", file=sys.stderr)
    if args.launcher == "local":
        slots = local_slots(args.jobs or processes.cpu_threads(), args.gpus, args.per_gpu,
                            args.gpus_per_run)
        progress = Progress(len(specs))
        try:
            outcomes = run_local(specs, slots, progress, args.gpus_per_run)
        finally:
            progress.close()
    else:
        followed = run_slurm(args, specs)
        if followed is None:
            return 0
        outcomes, progress = followed
    print(progress.summary(), file=sys.stderr)
    for outcome in outcomes:
        if outcome.state in (FAILED, ELSEWHERE):
            print(f"{outcome.state}: {outcome.title}: {outcome.detail}", file=sys.stderr)
    print_table(args, specs)
    return 0 if all(o.state in (FINISHED, SKIPPED) for o in outcomes) else 1


def run_slurm(args, specs):
    """Submits the unfinished cells as one job array and follows it to its end; returns
    (outcomes, progress), or None with --no-wait."""
    options = slurm_options(args)
    cluster = "slurm" if args.launcher == "slurm" else "local"
    executor = make_executor(run_files.submitit_dir(args.data, specs[0].dataset), options, cluster)
    array, submitted = None, False
    try:
        # a Ctrl-C while sbatch submits takes effect once its answer is in: then the array
        # is known, and the message says that it runs on and how to cancel it
        with deferred_stops():
            jobs, todo = submit_array(specs, executor, options)
            submitted = True
            if jobs:
                array = jobs[0].job_id.split("_")[0]
                print(f"submitted job array {array}: {len(jobs)} tasks ({len(specs) - len(todo)} "
                      f"cells finished already); submitit files in "
                      f"{Path(jobs[0].paths.folder).parent}/{array}_*/", file=sys.stderr)
        if args.no_wait:
            return None
        queue, reasons = None, None
        if args.launcher == "slurm" and array:
            if accounting_works(array):
                # squeue only for the reasons why tasks wait: submitit follows the array
                reasons = SlurmQueue(array, patience_s=float("inf")).pending_reasons
            else:
                print(f"sacct does not work on this cluster: following job array {array} with "
                      f"squeue and the cells' results files", file=sys.stderr)
                queue = SlurmQueue(array)
                reasons = queue.pending_reasons
        progress = Progress(len(specs))
        try:
            for spec in specs:
                if spec not in todo:
                    progress.ended(Outcome(spec.title, SKIPPED))
            outcomes = wait_for_jobs(jobs, todo, progress, poll_s=1.0, queue=queue, reasons=reasons)
        finally:
            progress.close()
    except KeyboardInterrupt:
        if args.launcher == "slurm" and not submitted:
            raise StoppedSubmitting() from None
        if args.launcher == "slurm" and array:
            raise StoppedFollowing(array) from None
        raise
    outcomes += [Outcome(spec.title, SKIPPED) for spec in specs if spec not in todo]
    return outcomes, progress


def print_table(args, specs) -> None:
    """get-results.py --table for what this table ran, beside the paper where it has the dataset:
    its own cells only (its run folders, its --epochs), whatever else the folders hold."""
    with_paper = args.dataset in load_paper_results()
    identity = dict(specs[0].identity)
    try:
        table = tables.build_table(args.data, specs[0].dataset, specs[0].config.model,
                                   with_paper=with_paper,
                                   only=[spec.config for spec in specs],
                                   data_dir=identity.get("data_dir"), epochs=identity["epochs"],
                                   run_folders={spec.run_folder for spec in specs})
    except (run_reading.ReportError, run_files.UnreadableFile) as error:
        print(f"run-table.py: no table yet: {error}", file=sys.stderr)
        return
    print(table_formats.render_table(table, args.format))


def main(args) -> int:
    try:
        with sigterm_as_interrupt(KeyboardInterrupt):
            return run_table(args)
    except UsageError as error:
        print(f"run-table.py: error: {error}", file=sys.stderr)
        return 2
    except QueueUnavailable as error:
        print(f"run-table.py: {error}", file=sys.stderr)
        return 1
    except (SubmissionFailed, NeverStarts) as error:
        print(f"run-table.py: error: {error}", file=sys.stderr)
        return 1
    except StoppedFollowing as stop:
        print(f"\ninterrupted: job array {stop.array} goes on running on the cluster (this command only "
              f"stopped following it): `squeue -j {stop.array}` shows it, `scancel {stop.array}` cancels "
              f"it (each run saves its last epoch); once it has ended, the same command prints the "
              f"table and resubmits what is unfinished", file=sys.stderr)
        return 130
    except StoppedSubmitting:
        print("\ninterrupted while sbatch was submitting the job array: `squeue --me --name run-table` "
              "lists it if sbatch took it before it stopped (`scancel` cancels it); the same command "
              "submits what is unfinished", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted: the runs saved their last epoch; the same command finishes the table",
              file=sys.stderr)
        return 130
