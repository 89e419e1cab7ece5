"""Train a Math LLM model, or resume the run already in --output-dir.

    python scripts/train.py [--model-size small] [--output-dir checkpoints] ...
    python scripts/train.py --config recipes/add10.yaml [--learning-rate 1e-3 ...]   # a recipe's training section
    python scripts/train.py --config RECIPE --variant l1_w8        # one variant of a recipe with variants
    torchrun --nproc_per_node 8 scripts/train.py ...     # data-parallel, same flags
"""

import argparse
import logging
import sys

from math_llm.cli import run_main
from math_llm.distributed import is_main_process, run_process
from math_llm.flags import add_flags, parse_config
from math_llm.logging_setup import setup_logging
from math_llm.recipes import in_recipe_dirs, training_recipe
from math_llm.trainer import TrainConfig, train


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="RECIPE", help="a recipe file: its train section sets these flags, which "
                        "the command line overrides; its data (and selection set) is generated into data/<dataset> "
                        "(data/<dataset>/seed-<seed> where each seed has its own data) and the run goes to "
                        "checkpoints/<recipe>/seed-<seed>, unless --data-dir, --selection-data or --output-dir say "
                        "otherwise. scripts/run_recipe.py also evaluates its extra sets")
    parser.add_argument("--variant", metavar="NAME", help="with --config, the recipe's variant to train (required "
                        "for a recipe with variants): its flags over the train section, its first seed unless --seed "
                        "is given, and the run dir checkpoints/<recipe>/<variant>/seed-<seed>")
    return add_flags(parser, TrainConfig)


def main():
    argv, parser = sys.argv[1:], build_parser()
    args = parser.parse_args(argv)
    recipe = training_recipe(args.config, args.variant)
    config, _, explicit_flags = parse_config(parser, TrainConfig, argv, recipe and recipe.train)
    prepare = None
    if recipe:
        config, prepare = in_recipe_dirs(recipe, config, explicit_flags)
    # under torchrun, the other ranks only warn; rank 0 also writes the run's log file (train opens it)
    setup_logging(level=logging.INFO if is_main_process() else logging.WARNING)
    run_process(train, config, explicit_flags, prepare)


if __name__ == "__main__":
    run_main(main)
