#!/usr/bin/env python3
"""Train a dataset's table (configurations x IR-NR settings x runs) and print it.

    python run-table.py --dataset DIGITS --settings 10-0.1 --runs 3 --epochs 100
    python run-table.py --dataset SVHN --gpus 0,1,2,3 --per-gpu 2
    python run-table.py --dataset CIFAR10 --launcher slurm --partition gpu --gpus-per-task 1 --time-min 240

Every run is `implicit-augment.py ... --resume` in a process of its own, its output in
{data}/{dataset}/runN/logs/{run_name}.log: a finished cell is skipped, an unfinished one
continues, so the same command after any interruption finishes the table. Options this
script does not know (--epochs, --model, --no-cuda, -sr, --hyper-start, ...) are passed
on to every run. See custom_runs/table/ (sweep.py, local.py, slurm.py).
"""
import argparse
import sys

from custom_cli.table import build_parser, main, parse

if __name__ == "__main__":
    # the options, their defaults and help: custom_cli/table.py
    parser: argparse.ArgumentParser = build_parser()
    sys.exit(main(parse(parser)))
