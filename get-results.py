"""Accuracy of one configuration over its runs, or the paper's table of every configuration.

    python get-results.py -nr 0.1 -ir 100 --dataset SVHN --aug-model SEP --los-model BOTH --hyper-opt HES
    python get-results.py --dataset SVHN --table --paper --format markdown
    python get-results.py --dataset SVHN --table --metric valid --versus A_W
    python get-results.py --dataset folder --data-dir DIR --los-model BOTH --hyper-opt HES --suspects 50

Numbers come from the results files that implicit-augment.py writes into each
run folder (docs/files.md; their format is in custom_runs/run_files.py);
see custom_reports/ (run_reading.py, configuration_report.py, tables.py).
"""
import os
import sys

from custom_cli.results import get_args, main
from custom_common.errors import UsageError
from custom_datasets.containers import DataUnavailable
from custom_reports import run_reading, suspects
from custom_runs import run_files


if __name__ == "__main__":
    arguments = get_args()
    try:
        sys.exit(main(arguments))
    except (run_reading.ReportError, run_files.UnreadableFile, suspects.SuspectsError,
            UsageError, DataUnavailable) as error:
        # one line the user can act on; a traceback would bury it. Only line breaks are joined:
        # the commands in the message quote paths, whose spaces must stay as they are
        print(f"get-results.py: error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        sys.exit(1)
    except run_files.SaveFailed as error:  # --suspects writes all of its files or none
        print(f"get-results.py: error: {error}; nothing was written: free space there or "
              f"choose another folder with --out", file=sys.stderr)
        sys.exit(1)
    except BrokenPipeError:  # `| head`: stop quietly, and keep Python from failing on the final flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
