#!/usr/bin/env python3
"""AutoDO (Gudovskiy et al., CVPR 2021): train a classifier on biased, noisy data
with per-sample augmentation, loss-weight and soft-label hyperparameters learned
by Hessian-free implicit differentiation.

    python implicit-augment.py --dataset DIGITS -ir 10 -nr 0.1 --aug-model SEP --los-model BOTH --hyper-opt HES

One configuration on N processes (GPUs, or CPU processes with --no-cuda):

    torchrun --nproc_per_node N implicit-augment.py <the same flags>
"""
import argparse
import sys

from custom_cli.train import build_parser, main, parse

if __name__ == "__main__":
    # the options, their defaults and help: custom_cli/train.py
    parser: argparse.ArgumentParser = build_parser()
    sys.exit(main(parse(parser)))
