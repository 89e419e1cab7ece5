"""Generate disjoint train/val/test splits of arithmetic problems ("a+b=c<end>", or another --format) as JSON files.

    python scripts/generate_data.py --num-examples 100000 --max-digits 2
    python scripts/generate_data.py --operations +,-,* --max-digits 5 --format padded-reversed
    python scripts/generate_data.py --test-only --min-digits 11 --max-digits 100 --sampling same-length \\
        --format reversed-all --output-dir data/long
"""

import argparse
import sys

from math_llm.cli import run_main
from math_llm.data import write_dataset
from math_llm.data_generation import DataConfig
from math_llm.flags import add_flags, parse_config
from math_llm.logging_setup import setup_logging


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(parser, DataConfig)
    parser.add_argument("--output-dir", default="data", help="where the JSON files go (default: %(default)s)")
    return parser


def main():
    config, args, _ = parse_config(build_parser(), DataConfig, sys.argv[1:])
    setup_logging()
    write_dataset(args.output_dir, config)


if __name__ == "__main__":
    run_main(main)
