"""Compare runs by exact match versus length: one plot with a line per evaluation (the training lengths shaded),
and a Markdown table of exact match per band of lengths.

    python scripts/plot_lengths.py checkpoints/abacus/eval_test.json checkpoints/learned/eval_test.json \\
        --output lengths.png
"""

import argparse
import json
import logging
import os

from src.cli import run_main
from src.errors import DataError
from src.evaluation import length_bands
from src.logging_setup import setup_logging
from src.plots import save_length_plot

log = logging.getLogger("plot_lengths")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="eval_<name>.json files that evaluate.py wrote")
    parser.add_argument("--labels", help="comma-separated line labels, one per file (default: the position encoding "
                                         "and the checkpoint's directory)")
    parser.add_argument("--band", type=int, default=10, help="lengths per table column (default: %(default)s)")
    parser.add_argument("--title", default="Exact match versus operand length", help="plot title")
    parser.add_argument("--output", default="lengths.png", help="the plot's PNG file (default: %(default)s)")
    return parser


def read_results(path):
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: cannot read evaluation results ({error})") from None
    if "exact_match_by_length" not in results:
        raise DataError(f"{path}: no exact_match_by_length inside; evaluate the model again with scripts/evaluate.py")
    return results


def main():
    args = build_parser().parse_args()
    setup_logging()
    runs = [read_results(path) for path in args.results]
    labels = args.labels.split(",") if args.labels else [
        f"{run.get('pos_encoding', 'learned')} ({os.path.basename(os.path.dirname(run['checkpoint']))})"
        for run in runs]
    if len(labels) != len(runs):
        raise DataError(f"--labels names {len(labels)} runs but {len(runs)} result files were given")
    trained = runs[0].get("trained_lengths")
    save_length_plot({label: run["exact_match_by_length"] for label, run in zip(labels, runs)}, args.output,
                     args.title, trained)
    log.info(f"plot written to {args.output}")
    columns = list(length_bands(runs[0]["exact_match_by_length"], args.band))
    print("| run | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for label, run in zip(labels, runs):
        bands = length_bands(run["exact_match_by_length"], args.band)
        print(f"| {label} | " + " | ".join(f"{100 * bands[c]:.1f}" if c in bands else "" for c in columns) + " |")


if __name__ == "__main__":
    run_main(main)
