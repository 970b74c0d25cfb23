"""Qualitative figures of one run: t-SNE of test-set features (the paper's figure),
confusion matrices, and densities of the hyperparameters AutoDO learned.

    python visualize-density.py --dataset DIGITS -ir 10 -nr 0.1 -r run0
    python visualize-density.py --dataset DIGITS -ir 10 -nr 0.1 --plot-cmx
    python visualize-density.py --dataset DIGITS -ir 10 -nr 0.1 --configs A_W A_W_S --densities

Figures go to --out as PNG and PDF; t-SNE embeddings are cached in --out/cache/,
so drawing again is instant. See custom_reports/figures.py (and embeddings.py, learned.py,
drawing.py); the parser and main are custom_cli/visualize.py.
"""
import argparse
import sys

from custom_cli.visualize import build_parser, main, parse

if __name__ == "__main__":
    # the options, their defaults and help: custom_cli/visualize.py
    parser: argparse.ArgumentParser = build_parser()
    sys.exit(main(parse(parser)))
