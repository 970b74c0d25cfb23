"""Command-line options of implicit-augment.py (the paper's flags, names and
defaults) plus our additions; shared with bench/throughput.py."""
import argparse
import os
import sys
from pathlib import Path

from custom_common.errors import UsageError
from custom_common.settings import DATASETS, get_settings
from custom_models.hyper_models import LOSS_MODELS
from custom_models.networks import check_model_name
from custom_transforms.augment_models import (AUGMENT_MODELS, LEARNED_AUGMENT_MODELS, WITHOUT_POLICY,
                                              augment_models_help)

HYPER_OPTIMIZERS = ("NONE", "HES")
# where the paper's text and its released code differ (docs/methods.md, "Where the paper's text and its
# code differ"); the code's version is the default, each item here switches to the text's.
# This order is the order of the items in run names.
PAPER_TEXT_ITEMS = ("geometry", "downsample", "baselines", "valid", "warmup", "last-batch", "wrn-block")
# where this project chose otherwise for the fixed policies (RAND, AUTO, DADA and the colour
# sub-policy of SHA/SEP; docs/methods.md, "Where this project chose otherwise"): the released code's way
# is the default, each item here switches to this project's earlier choice. after-crop: the
# policy runs after random crop and flip, not first on the raw image; bilinear-grey: geometric
# operations sample bilinearly with a grey 0.5 fill, and Cutout is the earlier square filled with
# 0.5, not PIL's nearest and black and the released rectangle of (125, 123, 114). This order is
# the order of the items in run names.
POLICY_VARIANT_ITEMS = ("after-crop", "bilinear-grey")


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument error is one line (what is wrong, where to look), not the usage block."""

    def error(self, message):
        from custom_runs.distributed import is_main_process
        # under torchrun every rank parses the same flags: one of them says what is wrong
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n"
                  if is_main_process() else None)


def add_training_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add = parser.add_argument
    add("--data", default="./local_data", metavar="DIR",
        help="dataset files and run folders go under DIR/{dataset}/ (default: ./local_data)")
    add("--dataset", default="MNIST", metavar="NAME",
        help=f"one of {', '.join(DATASETS)}, or folder with --data-dir "
             f"(default: MNIST; DIGITS needs no download)")
    add_data_dir_argument(parser)
    add("--workers", type=int, default=4, help="DataLoader workers, ImageNet only (default: 4)")
    add("--epochs", type=int, default=200, help="training epochs (default: 200)")
    add("--lr", type=float, default=None, help="network learning rate (default: the dataset's, see docs/experiments.md, Datasets); "
             "may be lowered on --resume")
    add("--lr-decay-rate", type=float, default=None,
        help="cosine: final lr factor (default 1e-3); with --lr-decay-epochs: factor per milestone (default 0.1)")
    add("--lr-decay-epochs", type=int, nargs="*", default=None, metavar="EPOCH",
        help="step decay at these epochs instead of the cosine schedule")
    add("--lr-warm-epochs", type=int, default=5, help="epochs of per-batch linear warm-up (default: 5)")
    add("--gpu", type=int, default=0, help="CUDA device index (default: 0)")
    add("--no-cuda", action="store_true", help="train on the CPU even if CUDA is available")
    add("--log-interval", type=int, default=100,
        help="batches between updates of the running train loss on the progress bar (default: 100)")
    add("--plot-debug", action="store_true",
        help="write a grid of original vs augmented train images of the first batch")
    add_distortion_arguments(parser)
    add("-r", "--run-folder", default="run0", help="run folder; runN differ in seed (default: run0)")
    add("--overfit", action="store_true", help="ablation: the hyper step validates on the test set")
    add("--oversplit", action="store_true",
        help="ablation: train, hyper and valid data are all the whole official train set")
    add("--aug-model", default="NONE", choices=AUGMENT_MODELS,
        help=f"augmentation: {augment_models_help()} (default: NONE)")
    add("--los-model", default="NONE", choices=LOSS_MODELS, help="loss model (default: NONE)")
    add("--hyper-opt", default="NONE", choices=HYPER_OPTIMIZERS,
        help="hyperparameter optimisation: NONE or HES (implicit, Hessian-free) (default: NONE)")
    add("--hyper-steps", type=int, default=0,
        help="hyper steps per hyper epoch (default: 0 = one full pass over the train subset)")
    add("--hyper-iters", type=int, default=5, help="Neumann-series terms J (default: 5)")
    add("--hyper-alpha", type=float, default=0.01, help="Neumann-series step alpha (default: 0.01)")
    add("--hyper-beta", type=float, default=0.0,
        help="hyperparameter learning rate (default: 0 = the dataset's, 0.05; ImageNet 0.01)")
    add("--hyper-gamma", type=float, default=0.99,
        help="RMSprop smoothing constant of the hyper optimiser (default: 0.99)")
    add("--hyper-start", type=int, default=None,
        help="hyper steps run on epochs after this one (default: 25%% of --epochs, ImageNet 50%%)")
    add_paper_text_argument(parser)
    add_policy_variant_argument(parser)
    add("--seed", type=int, default=None, help="random seed (default: from the run folder, run3 -> 3)")
    add("--model", default=None,
        help="network: resnet18, wresnet28_10, wresnet16_4, wresnet28_2, ... (default: the dataset's)")
    add("--no-amp", action="store_true",
        help="train in fp32 instead of bf16 autocast (default on CUDA and on CPUs with native bf16: AMX or AVX512-BF16)")
    add("--compile", action="store_true",
        help="torch.compile the encoder (train step) and its folded copy (test pass, hyper epochs); "
             "on the CPU it needs a C++ compiler, and the first epoch pays the compilation")
    add("--resume", action="store_true", help="continue from last_{run_name}.pt of this configuration")
    add("--force", action="store_true", help="overwrite an existing result of this configuration")
    return parser


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", default=None, metavar="DIR",
        help="with --dataset folder: your images as DIR/train/<class>/*, DIR/valid/<class>/* "
             "(clean), optional DIR/test/<class>/*; runs go to {data}/folder_{DIR's name}_{8 hex "
             "digits of DIR's absolute path}/")


def add_distortion_arguments(parser: argparse.ArgumentParser) -> None:
    """-ir / -sr / -nr (docs/design.md §2), for implicit-augment.py and the scripts that pick its runs;
    check_distortion checks them."""
    add = parser.add_argument
    add("-ir", "--imbalance-ratio", type=int, default=1, help="class imbalance ratio IR >= 1 (default: 1)")
    add("-sr", "--subsample-ratio", type=float, default=1.0, help="subsample ratio in (0, 1] (default: 1.0)")
    add("-nr", "--noise-ratio", type=float, default=0.0, help="label noise ratio in [0, 1) (default: 0.0)")


def check_data_folder(data) -> None:
    """--data must be a folder this process can write, or a path it can create one at
    (not inside a file); raises UsageError."""
    path = Path(data)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"--data {path}: {probe} is a file, not a folder; choose another --data")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--data {path} is not writable; choose another folder with --data")


def dataset_settings(args: argparse.Namespace):
    """The settings of --dataset (and --data-dir for a folder dataset); raises UsageError."""
    from custom_datasets.folder import FOLDER_DATASET, folder_settings
    from custom_datasets.containers import DataUnavailable
    data_dir = getattr(args, "data_dir", None)
    if args.dataset == FOLDER_DATASET:
        if not data_dir:
            raise UsageError("--dataset folder needs --data-dir DIR (DIR/train/<class>/*, "
                             "DIR/valid/<class>/*)")
        try:
            return folder_settings(data_dir)
        except DataUnavailable as error:
            raise UsageError(str(error)) from None
    if data_dir:
        raise UsageError(f"--data-dir is for --dataset folder, not --dataset {args.dataset}; "
                         f"drop it, or use --dataset folder")
    try:
        return get_settings(args.dataset)
    except ValueError as error:
        raise UsageError(f"{error}, or folder with --data-dir (--dataset)") from None


def add_paper_text_argument(parser: argparse.ArgumentParser, selects: str = "") -> None:
    parser.add_argument(
        "--paper-text", nargs="+", default=[], choices=PAPER_TEXT_ITEMS + ("all",), metavar="ITEM",
        help=f"{selects}follow the paper's text instead of its released code in these items: "
             f"{', '.join(PAPER_TEXT_ITEMS)}, or all (default: none, the released code's data path)")


def paper_text_items(items) -> list:
    """--paper-text as recorded and named: each item once, in PAPER_TEXT_ITEMS order."""
    chosen = set(PAPER_TEXT_ITEMS) if "all" in items else set(items)
    return [item for item in PAPER_TEXT_ITEMS if item in chosen]


def add_policy_variant_argument(parser: argparse.ArgumentParser, selects: str = "") -> None:
    parser.add_argument(
        "--policy-variant", nargs="+", default=[], choices=POLICY_VARIANT_ITEMS + ("all",), metavar="ITEM",
        help=f"{selects}apply the fixed policies (RAND/AUTO/DADA, colour sub-policy of SHA/SEP) as this "
             f"project did before, not as the released code: after-crop (policy after crop and flip), "
             f"bilinear-grey (bilinear sampling, grey 0.5 fill), or all (default: none, the released "
             f"code's: policy first on the raw image, nearest sampling, black fill)")


def policy_variant_items(items, aug_model: str = "") -> list:
    """--policy-variant as recorded and named: each item once, in POLICY_VARIANT_ITEMS order;
    none for an --aug-model without a fixed policy (NONE) for them to change (so such a run
    keeps its name and its table cell)."""
    chosen = set(POLICY_VARIANT_ITEMS) if "all" in items else set(items)
    if aug_model in WITHOUT_POLICY:
        return []
    return [item for item in POLICY_VARIANT_ITEMS if item in chosen]


def saved_option(config: dict, key: str):
    """An identity option as a checkpoint or results file records it. Files written before
    --policy-variant existed lack it; for an --aug-model without a fixed policy (NONE), that
    is the default []; for the others None, since they applied the policies the earlier way."""
    if key == "policy_variant" and key not in config and config.get("aug_model") in WITHOUT_POLICY:
        return []
    return config.get(key)


def check_all(checks) -> None:
    """Raises UsageError with the message of the first (ok, message) check that fails."""
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


def at_least_one(flag: str, value) -> tuple:
    """The check of an option that counts something: `flag` must be at least 1."""
    return value >= 1, f"{flag} must be at least 1, got {value}"


def not_negative(flag: str, value, note: str = "") -> tuple:
    """The check of an option that may be 0 (`note` says what 0 means, e.g. " (0: all)")."""
    return value >= 0, f"{flag} must be >= 0{note}, got {value}"


def check_distortion(imbalance_ratio: int, subsample_ratio: float, noise_ratio: float) -> None:
    """The -ir / -sr / -nr ranges of docs/design.md §2; raises UsageError."""
    check_all([
        (imbalance_ratio >= 1, f"-ir must be an integer >= 1, got {imbalance_ratio}"),
        (0 < subsample_ratio <= 1, f"-sr must be in (0, 1], got {subsample_ratio}"),
        (0 <= noise_ratio < 1, f"-nr must be in [0, 1), got {noise_ratio}"),
    ])


def check_run_folder(run_folder: str) -> None:
    """-r names one folder inside {data}/{dataset}/, never a path out of it; raises UsageError."""
    if not run_folder or "/" in run_folder or os.sep in run_folder or run_folder in (".", ".."):
        raise UsageError(f"-r must be a folder name such as run0, got '{run_folder}'")


def check_run_selection(args: argparse.Namespace) -> None:
    """The options get-results.py and visualize-density.py pick runs by (--dataset,
    -ir/-sr/-nr, the ablation flags, -r), checked as implicit-augment.py checks them: no run
    can exist outside them. Raises UsageError."""
    dataset_settings(args)
    check_distortion(args.imbalance_ratio, args.subsample_ratio, args.noise_ratio)
    if args.overfit and args.oversplit:
        raise UsageError("choose at most one of --overfit and --oversplit")
    check_run_folder(args.run_folder)
    args.paper_text = paper_text_items(args.paper_text)
    args.policy_variant = policy_variant_items(args.policy_variant)


def resolve(args: argparse.Namespace, settings=None) -> argparse.Namespace:
    """Checks every option and fills the dataset-dependent defaults; raises UsageError.
    `settings`: dataset_settings(args) where the caller has them already (a folder
    dataset's are read from its folder, every file of it scanned)."""
    if settings is None:
        settings = dataset_settings(args)
    if args.model is None:
        args.model = settings.model
    try:
        check_model_name(args.model)
    except ValueError as error:
        raise UsageError(f"{error} (--model)") from None
    check_distortion(args.imbalance_ratio, args.subsample_ratio, args.noise_ratio)
    args.paper_text = paper_text_items(args.paper_text)
    args.policy_variant = policy_variant_items(args.policy_variant, args.aug_model)
    check_all([
        at_least_one("--epochs", args.epochs),
        (not (args.overfit and args.oversplit), "choose at most one of --overfit and --oversplit"),
        not_negative("--hyper-iters", args.hyper_iters),
        (args.hyper_alpha > 0, f"--hyper-alpha must be > 0, got {args.hyper_alpha}"),
        not_negative("--hyper-steps", args.hyper_steps),
        not_negative("--hyper-beta", args.hyper_beta),
        (0 < args.hyper_gamma < 1, f"--hyper-gamma must be in (0, 1), got {args.hyper_gamma}"),
        (args.lr is None or args.lr > 0, f"--lr must be > 0, got {args.lr}"),
        not_negative("--lr-warm-epochs", args.lr_warm_epochs),
        not_negative("--workers", args.workers),
        (args.log_interval >= 1, f"--log-interval must be >= 1, got {args.log_interval}"),
        (not (args.resume and args.force), "choose at most one of --resume and --force"),
    ])
    learns_something = args.aug_model in LEARNED_AUGMENT_MODELS or args.los_model != "NONE"
    if args.hyper_opt == "HES" and not learns_something:
        raise UsageError(f"--hyper-opt HES has nothing to learn: use --aug-model "
                         f"{'/'.join(LEARNED_AUGMENT_MODELS)} and/or --los-model WGHT/SOFT/BOTH")
    if args.lr_decay_rate is None:
        args.lr_decay_rate = 0.1 if args.lr_decay_epochs else 1e-3
    if not 0 < args.lr_decay_rate <= 1:
        raise UsageError(f"--lr-decay-rate must be in (0, 1], got {args.lr_decay_rate}")
    if args.lr is None:
        args.lr = settings.lr
    if args.hyper_start is None:
        args.hyper_start = round(args.epochs * settings.hyper_start_fraction)
    if args.hyper_start < 0:
        raise UsageError(f"--hyper-start must be >= 0, got {args.hyper_start}")
    if args.hyper_opt == "HES" and args.hyper_start >= args.epochs - 1:
        print(f"warning: --hyper-start {args.hyper_start} with --epochs {args.epochs}: no hyper step "
              f"will run (they run on epochs after hyper-start)", file=sys.stderr)
    if args.hyper_beta == 0:
        args.hyper_beta = settings.hyper_lr
    if args.seed is None:
        from custom_runs.run_files import seed_from_run_folder
        args.seed = seed_from_run_folder(args.run_folder)
    check_run_folder(args.run_folder)
    return args
