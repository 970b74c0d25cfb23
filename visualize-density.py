"""Qualitative figures of one run: t-SNE of test-set features (the paper's figure),
confusion matrices, and densities of the hyperparameters AutoDO learned.

The entry point of `python visualize-density.py`; its usage, options and main are in
custom_cli/visualize.py (`python visualize-density.py --help` prints them)."""
import argparse
import sys

from custom_cli.visualize import build_parser, main, parse

if __name__ == "__main__":
    parser: argparse.ArgumentParser = build_parser()
    sys.exit(main(parse(parser)))
