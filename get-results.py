"""Accuracy of one configuration over its runs, or the paper's table of every configuration.

    python get-results.py -nr 0.1 -ir 100 --dataset SVHN --aug-model SEP --los-model BOTH --hyper-opt HES
    python get-results.py --dataset SVHN --table --paper --format markdown

Numbers come from the results files that implicit-augment.py writes into each
run folder (README, "Files"; their format is in custom_runs/run_files.py);
see custom_runs/reporting.py.
"""
import argparse
import os
import sys

from custom_datasets.settings import DATASETS, get_settings
from custom_runs import reporting, run_files
from custom_models.hyper_models import AUGMENT_MODELS, LOSS_MODELS
from custom_runs.options import HYPER_OPTIMIZERS, OneLineErrorParser, UsageError, check_run_selection


def get_args(argv=None) -> argparse.Namespace:
    parser = OneLineErrorParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--data", default="./local_data", metavar="DIR",
        help="run folders are DIR/{dataset}/runN/ (default: ./local_data)")
    add("--dataset", default="MNIST", metavar="NAME",
        help=f"one of {', '.join(DATASETS)} (default: MNIST)")
    add("-ir", "--imbalance-ratio", type=int, default=1, help="class imbalance ratio IR >= 1 (default: 1)")
    add("-sr", "--subsample-ratio", type=float, default=1.0, help="subsample ratio in (0, 1] (default: 1.0)")
    add("-nr", "--noise-ratio", type=float, default=0.0, help="label noise ratio in [0, 1) (default: 0.0)")
    add("--aug-model", default="NONE", choices=AUGMENT_MODELS, help="augmentation (default: NONE)")
    add("--los-model", default="NONE", choices=LOSS_MODELS, help="loss model (default: NONE)")
    add("--hyper-opt", default="NONE", choices=HYPER_OPTIMIZERS,
        help="hyperparameter optimisation (default: NONE)")
    add("--model", default=None,
        help="network (default: the dataset's); with --table, show only this network's runs")
    add("--overfit", action="store_true", help="the --overfit ablation's runs")
    add("--oversplit", action="store_true", help="the --oversplit ablation's runs")
    add("--runs", type=int, default=None, metavar="N",
        help="require at least N finished runs and use the first N (error if fewer); "
             "with --table, use at most the first N runs of each cell (default: every run found)")
    add("--table", action="store_true",
        help="every configuration and IR-NR setting found for the dataset, as the paper's table")
    add("--format", default="text", choices=reporting.FORMATS, help="output format (default: text)")
    add("--paper", action="store_true", help="put the paper's error beside ours (SVHN, CIFAR, ImageNet)")
    add("--metric", default="best", choices=tuple(reporting.METRICS),
        help="best: best test accuracy of the run (the paper's); last: accuracy after the last epoch")
    add("--minority", action="store_true",
        help="accuracy on the minority (upper-half) classes: added to the per-run report, "
             "used instead of the overall error in --table")
    args = parser.parse_args(argv)
    try:
        check_run_selection(args)
    except UsageError as error:
        parser.error(str(error))
    return args


def main(args: argparse.Namespace) -> int:
    settings = get_settings(args.dataset)
    if args.runs is not None and args.runs < 1:
        raise reporting.ReportError(f"--runs must be at least 1, got {args.runs}")
    if args.table:
        table = reporting.build_table(args.data, args.dataset, settings.model, args.metric,
                                      args.minority, args.paper, args.model, args.runs)
        print(reporting.render_table(table, args.format))
        # a skipped file and its fix go to stderr in every format; csv has no room for notes
        for note in table.skipped + (table.notes if args.format == "csv" else []):
            print(f"note: {note}", file=sys.stderr)
        return 0
    config = reporting.Configuration(args.model or settings.model, args.aug_model, args.los_model,
                                     args.hyper_opt, args.imbalance_ratio, args.subsample_ratio,
                                     args.noise_ratio, args.overfit, args.oversplit)
    report = reporting.run_report(args.data, args.dataset, config, args.metric, args.runs,
                                  args.minority, args.paper)
    print(reporting.render_run_report(report, args.format))
    if args.format == "csv":  # the other formats carry the notes themselves
        for note in report.notes:
            print(f"note: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    arguments = get_args()
    try:
        sys.exit(main(arguments))
    except (reporting.ReportError, run_files.UnreadableFile) as error:
        # one line the user can act on; a traceback would bury it. Only line breaks are joined:
        # the commands in the message quote paths, whose spaces must stay as they are
        print(f"get-results.py: error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        sys.exit(1)
    except BrokenPipeError:  # `| head`: stop quietly, and keep Python from failing on the final flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
