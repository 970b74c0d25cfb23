#!/usr/bin/env python3
"""Train a dataset's table (configurations x IR-NR settings x runs) and print it.

The entry point of `python run-table.py`; its usage, options and main are in
custom_cli/table.py (`python run-table.py --help` prints them)."""
import argparse
import sys

from custom_cli.table import build_parser, main, parse

if __name__ == "__main__":
    parser: argparse.ArgumentParser = build_parser()
    sys.exit(main(parse(parser)))
