"""Compare runs by exact match versus length: one plot with a line per evaluation (the first run's training lengths
shaded), and a Markdown table of exact match per band of lengths.

    python scripts/plot_lengths.py checkpoints/abacus/eval_test.json checkpoints/learned/eval_test.json \\
        --output lengths.png
"""

import argparse
import json
import logging
import os

from math_llm.cli import run_main
from math_llm.errors import ConfigError, DataError
from math_llm.evaluation import length_bands
from math_llm.logging_setup import setup_logging
from math_llm.plots import save_length_plot

log = logging.getLogger("math_llm.plot_lengths")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="eval_<name>.json files that evaluate.py wrote, or the "
                                                   "test_results.json of a train.py run")
    parser.add_argument("--labels", help="comma-separated line labels (no commas inside), one per file (default: "
                                         "the position encoding and the checkpoint's directory)")
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
    by_length = results.get("exact_match_by_length") if isinstance(results, dict) else None
    if by_length is None:
        raise DataError(f"{path}: no exact_match_by_length inside; evaluate the model again with scripts/evaluate.py")
    if not isinstance(by_length, dict) or not all(
            length.isdigit() and isinstance(cell, dict) and {"exact_match", "count"} <= cell.keys()
            for length, cell in by_length.items()):
        raise DataError(f"{path}: exact_match_by_length must map each length to its exact_match and count, as "
                        f"scripts/evaluate.py writes it")
    return results


def run_label(results, path):
    """'abacus (lengthgen_abacus)': the position encoding and the run's directory, that of the checkpoint the
    results name, else the results file's own (results that do not name their checkpoint)."""
    directory = os.path.dirname(results.get("checkpoint") or "") or os.path.dirname(os.path.abspath(path))
    return f"{results.get('pos_encoding', 'learned')} ({os.path.basename(directory)})"


def main():
    args = build_parser().parse_args()
    setup_logging()
    if args.band < 1:
        raise ConfigError(f"--band must be at least 1, got {args.band}")
    runs = [read_results(path) for path in args.results]
    labels = args.labels.split(",") if args.labels else [run_label(run, path) for run, path in zip(runs, args.results)]
    if len(labels) != len(runs):
        raise ConfigError(f"--labels names {len(labels)} runs but {len(runs)} result files were given")
    trained = runs[0].get("trained_lengths")  # the shaded range: the first run's
    if any(run.get("trained_lengths") != trained for run in runs):
        log.warning(f"the runs were trained on different lengths; the plot shades the first one's, {trained}")
    save_length_plot({label: run["exact_match_by_length"] for label, run in zip(labels, runs)}, args.output,
                     args.title, trained)
    log.info(f"plot written to {args.output}")
    bands = [length_bands(run["exact_match_by_length"], args.band) for run in runs]
    columns = sorted({column for run_bands in bands for column in run_bands}, key=lambda c: int(c.split("-")[0]))
    print("| run | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for label, run_bands in zip(labels, bands):
        print(f"| {label} | " + " | ".join(f"{100 * run_bands[c]:.1f}" if c in run_bands else "" for c in columns)
              + " |")


if __name__ == "__main__":
    run_main(main)
