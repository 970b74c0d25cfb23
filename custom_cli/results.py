"""Accuracy of one configuration over its runs, or the paper's table of every configuration.

    python get-results.py -nr 0.1 -ir 100 --dataset SVHN --aug-model SEP --los-model BOTH --hyper-opt HES
    python get-results.py --dataset SVHN --table --paper --format markdown
    python get-results.py --dataset SVHN --table --metric valid --versus A_W
    python get-results.py --dataset folder --data-dir DIR --los-model BOTH --hyper-opt HES --suspects 50

Numbers come from the results files that implicit-augment.py writes into each
run folder (docs/files.md; their format is in custom_runs/run_files.py);
see custom_reports/ (run_reading.py, configuration_report.py, tables.py).
"""
import argparse
import os
import sys

from custom_common.errors import UsageError
from custom_common.settings import DATASETS
from custom_datasets.containers import DataUnavailable
from custom_models.hyper_models import LOSS_MODELS
from custom_reports import configuration_report, run_reading, suspects, table_formats, tables
from custom_runs import run_files
from custom_runs.table import sweep
from custom_runs.identity import Configuration
from custom_runs.options import (HYPER_OPTIMIZERS, OneLineErrorParser,
                                 add_data_dir_argument, add_distortion_arguments,
                                 add_paper_text_argument, add_policy_variant_argument, at_least_one,
                                 check_all, check_run_selection, dataset_settings, policy_variant_items)
from custom_transforms.augment_models import AUGMENT_MODELS


def build_parser() -> argparse.ArgumentParser:
    """The command's options, defaults and help."""
    parser = OneLineErrorParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--data", default="./local_data", metavar="DIR",
        help="run folders are DIR/{dataset}/runN/ (default: ./local_data)")
    add("--dataset", default="MNIST", metavar="NAME",
        help=f"one of {', '.join(DATASETS)}, or folder with --data-dir (default: MNIST)")
    add_data_dir_argument(parser)
    add_distortion_arguments(parser)
    add("--aug-model", default="NONE", choices=AUGMENT_MODELS, help="augmentation (default: NONE)")
    add("--los-model", default="NONE", choices=LOSS_MODELS, help="loss model (default: NONE)")
    add("--hyper-opt", default="NONE", choices=HYPER_OPTIMIZERS,
        help="hyperparameter optimisation (default: NONE)")
    add("--model", default=None,
        help="network (default: the dataset's); with --table, show only this network's runs")
    add("--overfit", action="store_true", help="the --overfit ablation's runs")
    add("--oversplit", action="store_true", help="the --oversplit ablation's runs")
    add_paper_text_argument(parser, selects="the runs that ")
    add_policy_variant_argument(parser, selects="the runs that ")
    add("--runs", type=int, default=None, metavar="N",
        help="require at least N finished runs and use the first N (error if fewer); "
             "with --table, use at most the first N runs of each cell (default: every run found)")
    add("--epochs", type=int, default=None, metavar="N",
        help="count only runs of N epochs (default: one configuration counts the length most of "
             "its finished runs have and names the others; --table gives each length rows of "
             "its own)")
    add("--table", action="store_true",
        help="every configuration and IR-NR setting found for the dataset, as the paper's table")
    add("--settings", nargs="+", default=None, metavar="IR-NR",
        help="with --table, only these columns, e.g. 10-0.1 1-0.0 (default: every setting found)")
    add("--format", default="text", choices=table_formats.FORMATS, help="output format (default: text)")
    add("--paper", action="store_true", help="put the paper's error beside ours (SVHN, CIFAR, ImageNet)")
    add("--metric", default="best", choices=tuple(run_reading.METRICS),
        help="which epoch's test accuracy: best: the epoch of best test accuracy (test-selected, "
             "the paper's protocol); valid: the epoch of best validation accuracy "
             "(valid-selected); last: the last epoch. --table shows all three and compares "
             "rows at this one (default: best)")
    add("--versus", default=tables.REFERENCE, metavar="ROW",
        help="--table: compare every row with row ROW run folder by run folder (mean paired "
             "difference of the error, its 95%% t interval, wins), e.g. A_W or "
             "\"A_W_S [wresnet28_2]\"; a method name takes each network's own row of it "
             f"(default: {tables.REFERENCE})")
    add("--minority", action="store_true",
        help="accuracy on the minority (upper-half) classes: added to the per-run report, "
             "used instead of the overall error in --table")
    add("--suspects", type=int, nargs="?", const=50, default=None, metavar="K",
        help="the train labels a WGHT/SOFT/BOTH run distrusts: CSV of every train image (most "
             "suspect first) and an image grid of the top K (K default: 50) of run -r")
    add("-r", "--run-folder", default="run0", help="--suspects: the run folder (default: run0)")
    add("--checkpoint", default="valid", choices=tuple(run_files.CHECKPOINTS),
        help="--suspects: network of the epoch of best validation accuracy (bestvalid_), of "
             "best test accuracy (best_, the paper's protocol) or the last epoch (last_) "
             "(default: valid)")
    add("--rank-by", default=suspects.DEFAULT_RANK_BY, choices=tuple(suspects.RANKINGS),
        help="--suspects: order of the CSV and grid, lowest first: the network's probability of the "
             "given label (self-confidence), its margin over the next class, AutoDO's trust, or "
             "trust x self-confidence; every one is a CSV column "
             f"(default: {suspects.DEFAULT_RANK_BY}; bench/label_errors.py measures it against cleanlab)")
    add("--out", default=None, metavar="DIR",
        help="--suspects: write the CSV and grid to DIR (default: the run folder)")
    add("--no-cuda", action="store_true", help="--suspects: run the network on the CPU")
    return parser


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """The command line (`argv`, default: sys.argv) read by `parser`, checked: a bad
    option or an impossible setting is one error line and exit 2."""
    args = parser.parse_args(argv)
    # usage errors exit 2, as argparse's own do
    if args.table and args.suspects is not None:
        parser.error("choose one of --table and --suspects")
    try:
        check_all(at_least_one(flag, value) for flag, value in
                  (("--runs", args.runs), ("--epochs", args.epochs), ("--suspects K", args.suspects))
                  if value is not None)
        if args.settings is not None:
            if not args.table:
                raise UsageError("--settings selects columns of --table: add --table")
            args.settings = [sweep.parse_setting(text) for text in args.settings]
        if args.suspects is not None and args.los_model not in suspects.LEARNING_LOSS_MODELS:
            raise UsageError(f"--suspects needs a run that learned loss weights or soft labels "
                             f"(--los-model WGHT, SOFT or BOTH), not --los-model {args.los_model}")
        check_run_selection(args)
    except UsageError as error:
        parser.error(str(error))
    return args


def get_args(argv=None) -> argparse.Namespace:
    """build_parser, then parse: the checked options of `argv`."""
    return parse(build_parser(), argv)


def main(args: argparse.Namespace) -> int:
    """The report the options ask for; a failure is one line on stderr and exit status 1."""
    try:
        return print_results(args)
    except (run_reading.ReportError, run_files.UnreadableFile, suspects.SuspectsError,
            UsageError, DataUnavailable) as error:
        # one line the user can act on; a traceback would bury it. Only line breaks are joined:
        # the commands in the message quote paths, whose spaces must stay as they are
        print(f"get-results.py: error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        return 1
    except run_files.SaveFailed as error:  # --suspects writes all of its files or none
        print(f"get-results.py: error: {error}; nothing was written: free space there or "
              f"choose another folder with --out", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `| head`: stop quietly, and keep Python from failing on the final flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def print_results(args: argparse.Namespace) -> int:
    settings = dataset_settings(args)
    if args.suspects is not None:
        return report_suspects(args, settings)
    if args.table:
        table = tables.build_table(args.data, settings.name, settings.model, args.metric,
                                   args.minority, args.paper, args.model, args.runs,
                                   data_dir=settings.folder, epochs=args.epochs,
                                   versus=args.versus, only_settings=args.settings)
        print(table_formats.render_table(table, args.format))
        # a skipped file and its fix go to stderr in every format; csv has no room for notes
        for note in table.skipped + (table.notes if args.format == "csv" else []):
            print(f"note: {note}", file=sys.stderr)
        return 0
    config = Configuration(args.model or settings.model, args.aug_model, args.los_model,
                           args.hyper_opt, args.imbalance_ratio, args.subsample_ratio,
                           args.noise_ratio, args.overfit, args.oversplit,
                           tuple(args.paper_text),
                           tuple(policy_variant_items(args.policy_variant, args.aug_model)))
    report = configuration_report.run_report(args.data, settings.name, config, args.metric, args.runs,
                                             args.minority, args.paper, data_dir=settings.folder,
                                             epochs=args.epochs)
    print(configuration_report.render_run_report(report, args.format))
    if args.format == "csv":  # the other formats carry the notes themselves
        for note in report.notes:
            print(f"note: {note}", file=sys.stderr)
    return 0


def report_suspects(args: argparse.Namespace, settings) -> int:
    import torch
    config = Configuration(args.model or settings.model, args.aug_model, args.los_model,
                           args.hyper_opt, args.imbalance_ratio, args.subsample_ratio,
                           args.noise_ratio, args.overfit, args.oversplit,
                           tuple(args.paper_text),
                           tuple(policy_variant_items(args.policy_variant, args.aug_model)))
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    report = suspects.suspects_report(args.data, settings, args.run_folder, config, args.checkpoint,
                                      args.suspects, args.out, device, args.rank_by)
    for line in report.summary_lines():
        print(line)
    for path in (report.csv_path,) + report.figure_paths:
        print(f"wrote {path}")
    return 0
