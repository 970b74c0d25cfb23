"""AutoDO (Gudovskiy et al., CVPR 2021): train a classifier on biased, noisy data
with per-sample augmentation, loss-weight and soft-label hyperparameters learned
by Hessian-free implicit differentiation.

implicit-augment.py's parser and main (the script at the top is its entry point); the
parser's description is this docstring's first paragraph.
"""
import argparse
import signal
import sys

from custom_common.errors import UsageError
from custom_common.signals import Terminated, sigterm_as_interrupt
from custom_datasets.containers import DataUnavailable
from custom_runs.distributed import (TablesDiverged, end_distributed_mode, init_distributed_mode,
                                     peer_stopped)
from custom_runs.options import OneLineErrorParser, add_training_arguments, resolve
from custom_runs.run_files import SaveFailed, UnreadableFile


def build_parser() -> argparse.ArgumentParser:
    """The command's options, defaults and help."""
    # every help text states its own default
    parser = OneLineErrorParser(description=__doc__.split("\n\n")[0])
    add_training_arguments(parser)
    return parser


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """The command line (`argv`, default: sys.argv) read by `parser`, checked: a bad
    option or an impossible setting is one error line and exit 2."""
    args = parser.parse_args(argv)
    try:
        return resolve(args)
    except UsageError as error:
        parser.error(str(error))


def get_args(argv=None) -> argparse.Namespace:
    """build_parser, then parse: the checked options of `argv`."""
    return parse(build_parser(), argv)


def main(args: argparse.Namespace) -> int:
    from custom_runs.experiment import Experiment
    # SIGTERM (a scheduler's pre-emption, `kill`) stops the run as Ctrl-C does
    with sigterm_as_interrupt():
        try:
            # under torchrun only rank 0 prints: every rank meets the same error and exits alike
            experiment = Experiment(args, collectives=init_distributed_mode(args))
            results = experiment.run()
        except (UsageError, DataUnavailable, UnreadableFile, FloatingPointError, TablesDiverged) as error:
            print(f"implicit-augment.py: error: {error}", file=sys.stderr)
            return 2 if isinstance(error, UsageError) else 1
        except SaveFailed as error:
            # the files of the last good epoch are intact (each is replaced only once written)
            print(f"implicit-augment.py: error: {error}; free space there (or make {error.path.parent} "
                  f"writable), then continue with the same command and --resume", file=sys.stderr)
            return 1
        except RuntimeError as error:
            if not peer_stopped(error):
                raise
            print("implicit-augment.py: error: another process of this run stopped; "
                  "continue with the same command and --resume", file=sys.stderr)
            return 1
        except KeyboardInterrupt as interrupt:
            terminated = isinstance(interrupt, Terminated)
            # Ctrl-C leaves the terminal's ^C on the line: start a new one
            stopped = "terminated (SIGTERM)" if terminated else "\ninterrupted"
            print(f"{stopped}; continue with the same command and --resume", file=sys.stderr)
            return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
        finally:
            end_distributed_mode()
    best, final, chosen = results["best"], results["final"], results["best_valid"]
    print(f"best test accuracy {best['acc']:.2f}% (epoch {best['epoch'] + 1}), "
          f"final {final['acc']:.2f}%")
    if chosen is not None:
        print(f"validation-selected: test accuracy {chosen['acc']:.2f}% (epoch {chosen['epoch'] + 1}, "
              f"validation accuracy {chosen['valid_acc']:.2f}%)")
    print(f"results: {experiment.plan.results_path}")
    print(f"checkpoints: {experiment.plan.best_path.name}, {experiment.plan.best_valid_path.name}, "
          f"{experiment.plan.last_path.name} in {experiment.plan.folder}")
    return 0
