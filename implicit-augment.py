#!/usr/bin/env python3
"""AutoDO (Gudovskiy et al., CVPR 2021): train a classifier on biased, noisy data
with per-sample augmentation, loss-weight and soft-label hyperparameters learned
by Hessian-free implicit differentiation.

The entry point of `python implicit-augment.py`; its usage, options and main are in
custom_cli/train.py (`python implicit-augment.py --help` prints them)."""
import argparse
import sys

from custom_cli.train import build_parser, main, parse

if __name__ == "__main__":
    parser: argparse.ArgumentParser = build_parser()
    sys.exit(main(parse(parser)))
