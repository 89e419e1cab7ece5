"""Generate disjoint train/val/test splits of addition problems ("a+b=c<end>", or another --format) as JSON files.

    python scripts/generate_data.py --num-examples 100000 --max-digits 2
"""

import argparse
import json
import logging
import time

from src.cli import run_main
from src.data import FORMATS, DataConfig, generate_splits, split_path, summarize, write_splits
from src.logging_setup import setup_logging

log = logging.getLogger("generate_data")
defaults = DataConfig()


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-examples", type=int, default=defaults.num_examples,
                        help="total problems over all splits, capped at the number of distinct problems "
                             "(default: %(default)s)")
    parser.add_argument("--max-digits", type=int, default=defaults.max_digits,
                        help="operands have 1 to this many digits, each length pair equally represented "
                             "(default: %(default)s)")
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction,
                        help="share of problems in val.json (default: %(default)s)")
    parser.add_argument("--test-fraction", type=float, default=defaults.test_fraction,
                        help="share of problems in test.json (default: %(default)s)")
    parser.add_argument("--format", choices=list(FORMATS), default=defaults.format,
                        help="how numbers are written: " + "; ".join(f"{name}: {example}" for name, example in
                                                                     FORMATS.items()) + " (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default: %(default)s)")
    parser.add_argument("--output-dir", default="data", help="where the JSON files go (default: %(default)s)")
    return parser


def main():
    args = build_parser().parse_args()
    setup_logging()
    config = DataConfig(num_examples=args.num_examples, max_digits=args.max_digits, val_fraction=args.val_fraction,
                        test_fraction=args.test_fraction, seed=args.seed, format=args.format)
    start = time.perf_counter()
    splits = generate_splits(config, log)
    write_splits(args.output_dir, splits, config)
    log.info(f"generated {sum(map(len, splits.values()))} distinct problems in {time.perf_counter() - start:.1f} s")
    for split, examples in splits.items():
        summary = summarize(examples)
        log.info(f"{split_path(args.output_dir, split)}: {summary['num_examples']} problems | by operand digits "
                 f"{json.dumps(summary['by_operand_digits'])} | by carries {json.dumps(summary['by_carries'])}")


if __name__ == "__main__":
    run_main(main)
