"""Accuracy of one configuration over its runs, or the paper's table of every configuration.

    python get-results.py -nr 0.1 -ir 100 --dataset SVHN --aug-model SEP --los-model BOTH --hyper-opt HES
    python get-results.py --dataset SVHN --table --paper --format markdown
    python get-results.py --dataset SVHN --table --metric valid --versus A_W
    python get-results.py --dataset folder --data-dir DIR --los-model BOTH --hyper-opt HES --suspects 50

Numbers come from the results files that implicit-augment.py writes into each
run folder (docs/files.md; their format is in custom_runs/run_files.py);
see custom_reports/ (run_reading.py, configuration_report.py, tables.py). The parser and
main are custom_cli/results.py.
"""
import argparse
import sys

from custom_cli.results import build_parser, main, parse

if __name__ == "__main__":
    # the options, their defaults and help: custom_cli/results.py
    parser: argparse.ArgumentParser = build_parser()
    sys.exit(main(parse(parser)))
