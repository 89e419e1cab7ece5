"""Run a recipe (recipes/<name>.yaml) end to end for each seed (of each variant, if it has variants): generate the
data it lacks, train (resuming the run found in checkpoints/<recipe>/seed-<seed>, or
checkpoints/<recipe>/<variant>/seed-<seed>), evaluate the held-out test split and every extra set, write
run_summary.json beside the checkpoints and record it in results/ at the same place (seed-<seed>.json); then log each
seed's exact match on every set with their mean, minimum and maximum. scripts/report.py turns results/ into
docs/results.md.

    python scripts/run_recipe.py recipes/add10.yaml                       # the recipe's own seeds
    python scripts/run_recipe.py recipes/add10.yaml --seeds 1,2,3 --bf16  # training flags override the recipe's
    python scripts/run_recipe.py recipes/add10.yaml --smoke               # seconds: a tiny model on a few problems
    python scripts/run_recipe.py RECIPE --variants l1_w8,l2_w8            # some of a recipe's variants
"""

import argparse
import os
import shlex
import sys

from math_llm.cli import run_main
from math_llm.errors import ConfigError
from math_llm.flags import add_flags, parse_config
from math_llm.logging_setup import setup_logging
from math_llm.recipes import RUNNER_FLAGS, check_set_seeds, chosen_variants, load_recipe, parse_seeds, run_seed, smoke
from math_llm.results import log_replicates
from math_llm.trainer import TrainConfig


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="the recipe's YAML file")
    run = parser.add_argument_group("the recipe run")
    run.add_argument("--seeds", help="comma-separated seeds to run, e.g. 1,2,3 (default: the recipe's seeds, or each "
                     "variant's own)")
    run.add_argument("--variants", help="comma-separated variants of the recipe to run, e.g. l1_w8,l2_w8 (default: "
                     "every variant, in the recipe's order)")
    run.add_argument("--smoke", action="store_true", help="shrink the recipe to a run of seconds (a one-layer "
                     "width-32 model, a few hundred problems, a few steps, its first seed of its first variant) to "
                     "check that it runs; its files go under data/smoke and checkpoints/smoke and nothing is "
                     "recorded in results/")
    run.add_argument("--data-root", help="datasets go to <data-root>/<dataset> (default: data)")
    run.add_argument("--output-root", help="runs go to <output-root>/<recipe>/seed-<seed>, or "
                     "<output-root>/<recipe>/<variant>/seed-<seed> (default: checkpoints)")
    run.add_argument("--results-dir", default="results", help="where run summaries are recorded (default: "
                     "%(default)s)")
    return add_flags(parser, TrainConfig)  # training flags: they override the recipe's train section


def main():
    argv, parser = sys.argv[1:], build_parser()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("run_recipe.py runs in one process; under torchrun, train a recipe with "
                          "scripts/train.py --config RECIPE, then run_recipe.py (one process) evaluates and records it")
    args = parser.parse_args(argv)
    setup_logging()  # to the console; each seed's run adds its own logs/training.log once it holds its dir
    runs = chosen_variants(load_recipe(args.recipe), args.variants and args.variants.split(","))
    if args.smoke:
        runs = [smoke(runs[0])]
    configs = [run_config(run, argv, args.seeds) for run in runs]  # every run's flags checked before any trains
    data_root = args.data_root or ("data/smoke" if args.smoke else "data")
    output_root = args.output_root or ("checkpoints/smoke" if args.smoke else "checkpoints")
    results_dir = None if args.smoke else args.results_dir
    summaries = []
    for run, (config, explicit_flags, seeds) in zip(runs, configs):
        for seed in seeds:
            command = " ".join(["python scripts/run_recipe.py",
                                *map(shlex.quote, seed_argv(argv, args.recipe, run.variant, seed))])
            summary = run_seed(run, run.train_config(config, data_root, output_root, seed), explicit_flags,
                               data_root, results_dir, command)
            if summary is None:  # stopped by a signal, with a checkpoint saved: the same command resumes
                sys.exit(130)
            summaries.append(summary)
    setup_logging()  # the summary of all seeds belongs to no seed's log file
    log_replicates(summaries)


def run_config(run, argv, seeds_text):
    """(TrainConfig, names of the flags given, seeds) of one recipe (or variant) run: its train section under the
    command line's flags, its seeds unless --seeds says otherwise."""
    # a parser of its own: parse_config makes the run's train section its parser's defaults
    config, _, explicit_flags = parse_config(build_parser(), TrainConfig, argv, run.train)
    if given := [name for name in RUNNER_FLAGS if name in explicit_flags]:
        raise ConfigError(f"{', '.join('--' + name.replace('_', '-') for name in given)}: a recipe run sets these; "
                          f"use --data-root, --output-root and --seeds (a selection set is the recipe's)")
    seeds = parse_seeds(seeds_text) if seeds_text else run.seeds
    check_set_seeds(run, seeds)
    return config, explicit_flags, seeds


def seed_argv(argv, recipe_path, variant, seed):
    """The command line that reruns one seed (of one variant): the recipe, --variants VARIANT, --seeds SEED, and the
    other flags as given."""
    rest, skip = [], False
    for arg in argv:
        if skip or arg == recipe_path:
            skip = False
            continue
        if arg in ("--seeds", "--variants"):
            skip = True
            continue
        if not arg.startswith(("--seeds=", "--variants=")):
            rest.append(arg)
    return [recipe_path, *(["--variants", variant] if variant else []), "--seeds", str(seed), *rest]


if __name__ == "__main__":
    run_main(main)
