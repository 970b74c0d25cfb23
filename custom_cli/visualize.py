"""Qualitative figures of one run: t-SNE of test-set features (the paper's figure),
confusion matrices, and densities of the hyperparameters AutoDO learned.

    python visualize-density.py --dataset DIGITS -ir 10 -nr 0.1 -r run0
    python visualize-density.py --dataset DIGITS -ir 10 -nr 0.1 --plot-cmx
    python visualize-density.py --dataset DIGITS -ir 10 -nr 0.1 --configs A_W A_W_S --densities

Figures go to --out as PNG and PDF; t-SNE embeddings are cached in --out/cache/,
so drawing again is instant. See custom_reports/figures.py (and embeddings.py, learned.py,
drawing.py).
"""
import argparse
import sys

import torch

from custom_common.settings import DATASETS
from custom_datasets.containers import DataUnavailable
from custom_reports import figures
from custom_runs import run_files
from custom_runs.identity import Configuration, paper_methods
from custom_common.errors import UsageError
from custom_runs.options import (OneLineErrorParser, add_data_dir_argument,
                                 add_distortion_arguments, add_paper_text_argument,
                                 add_policy_variant_argument, at_least_one, check_all,
                                 check_run_selection, dataset_settings, not_negative,
                                 policy_variant_items)


def build_parser() -> argparse.ArgumentParser:
    """The command's options, defaults and help."""
    parser = OneLineErrorParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--data", default="./local_data", metavar="DIR",
        help="dataset files and run folders are under DIR/{dataset}/ (default: ./local_data)")
    add("--dataset", default="MNIST", metavar="NAME",
        help=f"one of {', '.join(DATASETS)}, or folder with --data-dir (default: MNIST)")
    add_data_dir_argument(parser)
    add_distortion_arguments(parser)
    add("-r", "--run-folder", default="run0", help="run folder (default: run0)")
    add("--model", default=None, help="network the runs used (default: the dataset's)")
    add("--overfit", action="store_true", help="the --overfit ablation's checkpoints")
    add("--oversplit", action="store_true", help="the --oversplit ablation's checkpoints")
    add_paper_text_argument(parser, selects="the checkpoints of runs that ")
    add_policy_variant_argument(parser, selects="the checkpoints of runs that ")
    methods = list(paper_methods())
    add("--configs", nargs="+", default=["Baseline", "FAA", "A_W_S"], choices=methods, metavar="NAME",
        help=f"configurations side by side, by the paper's names: {', '.join(methods)} "
             f"(default: Baseline FAA A_W_S, as the paper's figure)")
    add("--checkpoint", default="valid", choices=tuple(run_files.CHECKPOINTS),
        help="network of each configuration for t-SNE and confusion matrices: the epoch of best "
             "validation accuracy (bestvalid_), of best test accuracy (best_, the paper's "
             "protocol) or the last epoch (last_) (default: valid); --densities always draws the "
             "learned tables of last_ (the latest hyper step), as get-results.py --suspects does")
    add("--plot-cmx", action="store_true", help="draw row-normalised confusion matrices instead of t-SNE")
    add("--densities", action="store_true",
        help="draw densities of the learned loss weights, soft labels and augmentation of the "
             "chosen configurations that learn them (A_W, A_W_S, ...) instead of t-SNE")
    add("--out", default="./visualizations", metavar="DIR", help="output folder (default: ./visualizations)")
    add("--max-points", type=int, default=5000,
        help="t-SNE of at most this many test images, a seeded random subset (0: all; default: 5000)")
    add("--perplexity", type=float, default=30.0, help="t-SNE perplexity > 0 (default: 30)")
    add("--seed", type=int, default=0, help="seed of the subset and of t-SNE (default: 0)")
    add("--threads", type=int, default=0,
        help="CPU threads for t-SNE (default: 0 = one below 1000 points, all otherwise; "
             "1 is fastest on a busy machine)")
    add("--batch-size", type=int, default=500, help="test batch size for the features (default: 500)")
    add("--workers", type=int, default=4, help="DataLoader workers, ImageNet only (default: 4)")
    add("--gpu", type=int, default=0, help="CUDA device for the features (default: 0)")
    add("--no-cuda", action="store_true", help="compute features on the CPU even if CUDA is available")
    return parser


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """The command line (`argv`, default: sys.argv) read by `parser`, checked: a bad
    option or an impossible setting is one error line and exit 2."""
    args = parser.parse_args(argv)
    try:
        check_run_selection(args)
        check_all([
            not_negative("--max-points", args.max_points, " (0: all)"),
            (args.perplexity > 0, f"--perplexity must be > 0, got {args.perplexity}"),
            not_negative("--threads", args.threads, " (0: automatic)"),
            at_least_one("--batch-size", args.batch_size),
            not_negative("--workers", args.workers),
            not_negative("--gpu", args.gpu),
        ])
    except UsageError as error:
        parser.error(str(error))
    return args


def get_args(argv=None) -> argparse.Namespace:
    """build_parser, then parse: the checked options of `argv`."""
    return parse(build_parser(), argv)


def feature_device(args: argparse.Namespace) -> torch.device:
    """--gpu N as implicit-augment.py reads it (its own chooser); the CPU without CUDA or
    with --no-cuda."""
    from custom_runs.builders import select_device
    try:
        return select_device(args)
    except UsageError as error:
        raise figures.FigureError(str(error)) from None


def main(args: argparse.Namespace) -> int:
    """The figures the options ask for; a failure is one line on stderr and exit status 1."""
    try:
        return draw(args)
    except (figures.FigureError, run_files.UnreadableFile, DataUnavailable) as error:
        # one line the user can act on; a traceback would bury it
        print(f"visualize-density.py: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    except run_files.SaveFailed as error:  # a figure is written whole (png and pdf) or not at all
        print(f"visualize-density.py: error: {error}; free space there or choose another folder "
              f"with --out", file=sys.stderr)
        return 1


def draw(args: argparse.Namespace) -> int:
    settings = dataset_settings(args)
    model = args.model or settings.model
    methods = paper_methods()
    configs = {label: Configuration(model, *methods[label], args.imbalance_ratio,
                                    args.subsample_ratio, args.noise_ratio,
                                    args.overfit, args.oversplit, tuple(args.paper_text),
                                    tuple(policy_variant_items(args.policy_variant,
                                                               methods[label][0])))
               for label in dict.fromkeys(args.configs)}
    device = feature_device(args)
    run = figures.RunFigures(args.data, settings, args.run_folder, configs, args.checkpoint,
                             args.out, device, args.batch_size, args.workers)
    run.check_checkpoints(networks=args.plot_cmx or not args.densities, tables=args.densities)
    run.check_out_dir(with_cache=not args.densities or args.plot_cmx)
    written = []
    if args.densities:
        written += run.density_figures()[0]
    if args.plot_cmx:
        written += run.confusion_figure()
    if not (args.densities or args.plot_cmx):
        written += run.tsne_figure(args.perplexity, args.max_points, args.seed, threads=args.threads)
    for path in written:
        print(f"wrote {path}")
    return 0
