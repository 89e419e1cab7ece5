"""Write docs/results.md (per recipe: model, parameters, training problems, training time, exact match on every
set for each seed with mean, min and max, the selected step, the command; per recipe with variants: a row per
variant and a plot of exact match against parameters) and its plots from the run summaries in results/, and
README.md's headline table from the same figures.

    python scripts/report.py [--results-dir results] [--docs-dir docs]
"""

import argparse
import glob
import logging
import os

from math_llm.cli import run_main
from math_llm.logging_setup import setup_logging
from math_llm.results import write_report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default="results", help="run summaries, <recipe>/seed-<seed>.json, or "
                        "run dirs, <recipe>/seed-<seed>/run_summary.json, such as checkpoints; a variant's are one "
                        "level down, in <recipe>/<variant>/ (default: %(default)s)")
    parser.add_argument("--recipes-dir", default="recipes", help="the recipes, to list those without a run "
                        "(default: %(default)s)")
    parser.add_argument("--docs-dir", default="docs", help="where results.md and its plots go (default: %(default)s)")
    parser.add_argument("--readme", default="README.md", help="the README whose results table is rewritten "
                        "(default: %(default)s)")
    args = parser.parse_args()
    setup_logging()
    recipes = sorted(glob.glob(os.path.join(args.recipes_dir, "*.yaml")))
    for path in write_report(args.results_dir, recipes, args.docs_dir, args.readme):
        logging.getLogger("math_llm").info(f"wrote {path}")


if __name__ == "__main__":
    run_main(main)
