"""Qualitative figures of one run: t-SNE of test-set features (the paper's figure),
confusion matrices, and densities of the hyperparameters AutoDO learned.

    python visualize-density.py --dataset DIGITS -ir 10 -nr 0.1 -r run0
    python visualize-density.py --dataset DIGITS -ir 10 -nr 0.1 --plot-cmx
    python visualize-density.py --dataset DIGITS -ir 10 -nr 0.1 --configs A_W A_W_S --densities

Figures go to --out as PNG and PDF; t-SNE embeddings are cached in --out/cache/,
so drawing again is instant. See custom_reports/figures.py (and embeddings.py, learned.py, drawing.py).
"""
import sys

from custom_cli.visualize import get_args, main
from custom_datasets.containers import DataUnavailable
from custom_reports import figures
from custom_runs import run_files


if __name__ == "__main__":
    arguments = get_args()
    try:
        sys.exit(main(arguments))
    except (figures.FigureError, run_files.UnreadableFile, DataUnavailable) as error:
        # one line the user can act on; a traceback would bury it
        print(f"visualize-density.py: error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(1)
    except run_files.SaveFailed as error:  # a figure is written whole (png and pdf) or not at all
        print(f"visualize-density.py: error: {error}; free space there or choose another folder "
              f"with --out", file=sys.stderr)
        sys.exit(1)
