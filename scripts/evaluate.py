"""Evaluate a trained model: exact match (greedy generation), token accuracy and loss, by operation, by operand
lengths (JSON and a heatmap PNG), by carries, by answer digit place, by the sign of differences, and on edge cases;
prints the worst cells and some mistakes. For a model trained with --running-sum-loss, also how well its probe reads
the column totals.

    python scripts/evaluate.py --checkpoint checkpoints/best_model.pt [--split test | --data-path file.json]
"""

import argparse
import sys

from math_llm.cli import run_main
from math_llm.evaluation import EvalConfig, evaluate_checkpoint
from math_llm.flags import add_flags, parse_config
from math_llm.logging_setup import setup_logging


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_flags(parser, EvalConfig)


def main():
    config, _, _ = parse_config(build_parser(), EvalConfig, sys.argv[1:])
    setup_logging()
    evaluate_checkpoint(config)


if __name__ == "__main__":
    run_main(main)
