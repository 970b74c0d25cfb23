"""Accuracy of one configuration over its runs, or the paper's table of every configuration.

The entry point of `python get-results.py`; its usage, options and main are in
custom_cli/results.py (`python get-results.py --help` prints them)."""
import argparse
import sys

from custom_cli.results import build_parser, main, parse

if __name__ == "__main__":
    parser: argparse.ArgumentParser = build_parser()
    sys.exit(main(parse(parser)))
