"""Generate disjoint train/val/test splits of arithmetic problems ("a+b=c<end>", or another --format) as JSON files.

    python scripts/generate_data.py --num-examples 100000 --max-digits 2
    python scripts/generate_data.py --operations +,-,* --max-digits 5 --format padded-reversed
    python scripts/generate_data.py --test-only --min-digits 11 --max-digits 100 --sampling same-length \
        --format reversed-all --output-dir data/long
"""

import argparse
import json
import logging
import os
import time

from src.cli import run_main
from src.data import SAMPLINGS, DataConfig, generate_splits, split_path, summarize, write_splits
from src.errors import ConfigError
from src.logging_setup import setup_logging
from src.problems import FORMATS

log = logging.getLogger("generate_data")
defaults = DataConfig()


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-examples", type=int, default=defaults.num_examples,
                        help="total problems over all splits, capped at the number of distinct problems "
                             "(default: %(default)s)")
    parser.add_argument("--max-digits", type=int, default=defaults.max_digits,
                        help="operands have up to this many digits, any length up to 1000 (default: %(default)s)")
    parser.add_argument("--min-digits", type=int, default=defaults.min_digits,
                        help="operands have at least this many digits, e.g. a test set of longer numbers than "
                             "training had: --min-digits 11 --max-digits 100 (default: %(default)s)")
    parser.add_argument("--operations", default=defaults.operations,
                        help="comma-separated operations mixed in one dataset, any of + - * or add sub mul (a value "
                             "that starts with - needs the = form: --operations=-,*); subtraction may be negative; "
                             "each equally represented unless --operation-weights (default: %(default)s)")
    parser.add_argument("--operation-weights", default=defaults.operation_weights,
                        help="relative shares of the operations, one per operation of --operations and in its order, "
                             "e.g. --operations +,-,* --operation-weights 1,1,2 makes half the problems products "
                             "(default: equal shares)")
    parser.add_argument("--max-operands", type=int, default=defaults.max_operands,
                        help="problems have 2 to this many operands, e.g. 12+7+30=49, one operation per problem, "
                             "evaluated left to right; each count equally represented (default: %(default)s)")
    parser.add_argument("--sampling", choices=list(SAMPLINGS), default=defaults.sampling,
                        help="; ".join(f"{name}: {text}" for name, text in SAMPLINGS.items()) +
                             " (default: %(default)s)")
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction,
                        help="share of problems in val.json (default: %(default)s)")
    parser.add_argument("--test-fraction", type=float, default=defaults.test_fraction,
                        help="share of problems in test.json (default: %(default)s)")
    parser.add_argument("--test-only", action="store_true",
                        help="write every problem to test.json and no train/val files: a test set for a model "
                             "trained on other data, e.g. longer numbers")
    parser.add_argument("--format", choices=list(FORMATS), default=defaults.format,
                        help="how numbers are written: " + "; ".join(f"{name}: {example}" for name, example in
                                                                     FORMATS.items()) + " (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default: %(default)s)")
    parser.add_argument("--output-dir", default="data", help="where the JSON files go (default: %(default)s)")
    return parser


def main():
    args = build_parser().parse_args()
    setup_logging()
    config = DataConfig(num_examples=args.num_examples, max_digits=args.max_digits, min_digits=args.min_digits,
                        val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                        format=args.format, operations=args.operations, operation_weights=args.operation_weights,
                        max_operands=args.max_operands, sampling=args.sampling, test_only=args.test_only)
    stale = [split_path(args.output_dir, split) for split in ("train", "val")
             if config.test_only and os.path.exists(split_path(args.output_dir, split))]
    if stale:  # a test-only file beside another dataset's training split could be trained on by mistake
        raise ConfigError(f"--test-only: {args.output_dir} already holds {' and '.join(stale)}; write the test file "
                          f"to a directory of its own")
    start = time.perf_counter()
    splits = generate_splits(config, log)
    write_splits(args.output_dir, splits, config)
    log.info(f"generated {sum(map(len, splits.values()))} distinct problems in {time.perf_counter() - start:.1f} s")
    for split, examples in splits.items():
        summary = summarize(examples, config.format)
        by_digits = summary["by_operand_digits"]
        by_digits = json.dumps(by_digits) if len(by_digits) <= 25 else f"{len(by_digits)} length combinations"
        log.info(f"{split_path(args.output_dir, split)}: {summary['num_examples']} problems | by operation "
                 f"{json.dumps(summary['by_operation'])} | by operand digits {by_digits} | by carries "
                 f"{json.dumps(summary['by_carries'])}")


if __name__ == "__main__":
    run_main(main)
