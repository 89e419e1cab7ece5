"""The results of recipe runs, from their summaries (results/<recipe>/seed-<seed>.json, as recipes.run_seed writes
them): each seed's figures and their spread, docs/results.md with its plots, and README.md's headline table. Nothing
here is typed by hand: rerun a recipe, then scripts/report.py, and every number follows.
"""

import glob
import json
import logging
import os
import re
import statistics

from math_llm.errors import DataError
from math_llm.files import write_text
from math_llm.plots import save_curves, save_length_plot
from math_llm.recipes import SUMMARY_FILE

log = logging.getLogger(__name__)
README_BEGIN, README_END = "<!-- results table: scripts/report.py writes it -->", "<!-- end of results table -->"
CURVES_PLOT, LENGTHS_PLOT = "results_curves.png", "results_by_length.png"
README_ROWS = 12  # a front door's table; docs/results.md has every recipe
TARGET = 0.99  # the accuracy whose time the recipe sections report
MANY_LENGTHS = 10  # the length plot shows the sets that span more lengths than this (length generalisation)


def load_summaries(results_dir):
    """{recipe name: [summary of each seed, by seed]} from results_dir's <recipe>/seed-<seed>.json (as recorded in
    results/) or <recipe>/seed-<seed>/run_summary.json (the run dirs under checkpoints/); an unreadable file is a
    DataError naming it."""
    runs, seen = {}, {}
    paths = glob.glob(os.path.join(results_dir, "*", "seed-*.json")) + \
        glob.glob(os.path.join(results_dir, "*", "seed-*", SUMMARY_FILE))
    for path in sorted(paths):
        try:
            with open(path) as f:
                summary = json.load(f)
            key = summary["recipe"], summary["seed"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DataError(f"{path}: not a run summary ({error})") from None
        if key in seen:
            raise DataError(f"{path}: recipe {key[0]} seed {key[1]} is also in {seen[key]}; keep one")
        seen[key] = path
        runs.setdefault(summary["recipe"], []).append(summary)
    return {name: sorted(summaries, key=lambda s: s["seed"]) for name, summaries in sorted(runs.items())}


def spread(values):
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def percent(value):
    return f"{100 * value:.2f}%"


def set_names(summaries):
    """The evaluation sets of a recipe's runs, held-out test first, in the order the runs have them."""
    names = []
    for summary in summaries:
        names += [name for name in summary["evaluations"] if name not in names]
    return names


def log_replicates(summaries):
    """Each seed's exact match on every set, and their mean, minimum and maximum."""
    for name in set_names(summaries):
        seeds = [s["seed"] for s in summaries if name in s["evaluations"]]
        values = exact_matches(summaries, name)
        stats = spread(values)
        log.info(f"{summaries[0]['recipe']} {name}: " + " ".join(
            f"seed {seed} {percent(value)}" for seed, value in zip(seeds, values)) +
            f" | mean {percent(stats['mean'])} min {percent(stats['min'])} max {percent(stats['max'])} over "
            f"{len(values)} seeds")


def command_of(summaries):
    """One command for all the seeds where they differ only in --seeds, else each seed's."""
    commands = [s["command"] for s in summaries]
    shared = {re.sub(r"--seeds \S+", "--seeds *", command) for command in commands}
    if len(shared) == 1:
        return [shared.pop().replace("--seeds *", "--seeds " + ",".join(str(s["seed"]) for s in summaries))]
    return commands


def spread_text(values):
    stats = spread(values)
    if len(values) == 1:
        return percent(stats["mean"])
    return f"{percent(stats['mean'])} ({percent(stats['min'])}-{percent(stats['max'])})"


def model_text(summary):
    model = summary["model"]
    return (f"`{model['size']}` ({model['layers']} layers, width {model['width']}, {model['heads']} heads, "
            f"{model['pos_encoding']} positions), {model['num_parameters']:,} parameters")


def recipe_section(summaries):
    """The Markdown section of one recipe: what it is, its command, and a table of every seed's figures."""
    first = summaries[0]
    seeds = [s["seed"] for s in summaries]
    lines = [f"### {first['recipe']}", "", first["description"], "",
             f"Recipe [{first['recipe_file']}](../{first['recipe_file']}); model {model_text(first)}; "
             f"{first['data']['train_examples']:,} training problems, format `{first['data']['format']}`; "
             f"machine: {first['machine']}.", "", "```bash", *command_of(summaries), "```", "",
             "| | " + " | ".join(f"seed {seed}" for seed in seeds) + (" | mean | min | max |" if len(seeds) > 1
                                                                       else " |"),
             "|---" * (len(seeds) + 1 + (3 if len(seeds) > 1 else 0)) + "|"]

    def row(label, values, text=percent, with_spread=True):
        cells = [text(value) if value is not None else "-" for value in values]
        present = [value for value in values if value is not None]
        if len(seeds) > 1:
            stats = spread(present) if with_spread and present else {}
            cells += [text(stats[key]) if key in stats else "" for key in ("mean", "min", "max")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    for name in set_names(summaries):
        entries = [s["evaluations"].get(name) for s in summaries]
        known = next(entry for entry in entries if entry)
        overlap = max(entry["in_training"] for entry in entries if entry)
        label = (f"{'held-out test split' if name == 'test' else name} exact match ({known['num_examples']:,} "
                 f"problems{f', {overlap:,} of them in the training split' if overlap else ''})")
        row(label, [entry and entry["exact_match"] for entry in entries])
        if "edge_cases" in known:
            row(f"{name} edge cases ({known['edge_cases']['count']:,})",
                [entry and entry["edge_cases"]["exact_match"] for entry in entries])
    selection = first["selection"]["set"]
    row(f"best {selection} exact match (chooses the checkpoint)", [s["selection"]["exact_match"] for s in summaries])
    row("selected step", [s["selection"]["step"] for s in summaries], count, with_spread=False)
    row("training steps", [s["training"]["steps"] for s in summaries], count, with_spread=False)
    row("seconds of training steps", [s["training"]["training_seconds"] for s in summaries], seconds)
    row(f"seconds of training steps until {selection} first reached {percent(TARGET)}",
        [seconds_to(s["curve"], TARGET) for s in summaries], seconds)
    return lines


def count(value):
    return f"{value:,.0f}"


def seconds(value):
    return f"{value:,.1f}"


def seconds_to(curve, target):
    """The seconds of training steps behind the first evaluation at `target` exact match or above; None if none."""
    return next((point["training_seconds"] for point in curve if point["exact_match"] >= target), None)


def exact_matches(summaries, set_name):
    """The exact match on `set_name` of each run that evaluated it."""
    return [s["evaluations"][set_name]["exact_match"] for s in summaries if set_name in s["evaluations"]]


def first_sentence(text):
    return re.split(r"(?<=\.)\s", text, maxsplit=1)[0].rstrip(".").replace("|", "\\|")


def headline_row(summaries, results_link):
    first = summaries[0]
    others = "; ".join(f"{name} {spread_text(exact_matches(summaries, name))}"
                       for name in set_names(summaries) if name != "test")
    median_seconds = statistics.median(s["training"]["training_seconds"] for s in summaries)
    return (f"| [{first['recipe']}]({results_link}#{first['recipe']}) | {first_sentence(first['description'])} | "
            f"`{first['model']['size']}`, {first['model']['num_parameters']:,} | "
            f"{first['data']['train_examples']:,} | {median_seconds:,.0f} s | "
            f"{spread_text(exact_matches(summaries, 'test'))} | {others or '-'} | {len(summaries)} |")


def headline_table(runs, results_link=""):
    """At most one row per recipe; `results_link`: the path from the table's file to docs/results.md."""
    return ["| Recipe | What | Model, parameters | Training problems | Training time (median) | Held-out test "
            "exact match: mean (min-max) | Other sets | Seeds |", "|---|---|---|---|---|---|---|---|",
            *(headline_row(summaries, results_link) for summaries in runs.values())]


def write_report(results_dir, recipe_paths, docs_dir, readme_path):
    """docs/results.md and its plots from every summary in results_dir, and README.md's headline table between its
    markers; recipes without runs are listed with their command. Returns the files written."""
    runs = load_summaries(results_dir)
    if not runs:
        raise DataError(f"{results_dir}: no run summaries (<recipe>/seed-<seed>.json or "
                        f"<recipe>/seed-<seed>/{SUMMARY_FILE}); nothing to report")
    with open(readme_path, encoding="utf-8") as f:
        readme = f.read()
    if README_BEGIN not in readme or README_END not in readme:  # before anything is written
        raise DataError(f"{readme_path}: no results table markers ({README_BEGIN} ... {README_END})")
    os.makedirs(docs_dir, exist_ok=True)
    not_run = [path for path in recipe_paths if os.path.splitext(os.path.basename(path))[0] not in runs]
    written = []
    curves = {f"{name} seed {s['seed']}": [(point["training_seconds"], point["exact_match"]) for point in s["curve"]]
              for name, summaries in runs.items() for s in summaries}
    curves_file = os.path.join(docs_dir, CURVES_PLOT)
    if save_curves(curves, curves_file, "exact match on the set that chooses the checkpoint (val, or the recipe's "
                                        "selection set)"):
        written.append(curves_file)
    by_length = {f"{name} {set_name}": mean_by_length([s["evaluations"][set_name] for s in summaries])
                 for name, summaries in runs.items() for set_name in set_names(summaries)
                 if all(len(s["evaluations"].get(set_name, {}).get("by_length", ())) > MANY_LENGTHS
                        for s in summaries)}
    lengths_file = os.path.join(docs_dir, LENGTHS_PLOT)
    if by_length:
        save_length_plot(by_length, lengths_file, "exact match by length (mean over seeds)")
        written.append(lengths_file)

    lines = ["# Results", "",
             "Generated by `python scripts/report.py` from the run summaries in `results/` (each written by "
             "`scripts/run_recipe.py`); do not edit by hand. Every figure below is the exact match of greedy decoding "
             "(the whole answer right) of the checkpoint that the recipe's selection set (or val) chose; the "
             "held-out test split was never trained on or used to choose. Rerun a row with its command, then "
             "`python scripts/report.py`.", "", "## Summary", "", *headline_table(runs), ""]
    if curves_file in written:
        lines += [f"![exact match against seconds of training steps]({CURVES_PLOT})", ""]
    if lengths_file in written:
        lines += [f"![exact match by length]({LENGTHS_PLOT})", ""]
    lines += ["## Recipes", ""]
    for summaries in runs.values():
        lines += recipe_section(summaries) + [""]
    if not_run:
        lines += ["## Recipes without a recorded run", "",
                  *(f"- `python scripts/run_recipe.py {path}`" for path in not_run), ""]
    results_file = os.path.join(docs_dir, "results.md")
    write_text(results_file, "\n".join(lines))
    written.append(results_file)

    before, rest = readme.split(README_BEGIN, 1)
    after = rest.split(README_END, 1)[1]
    if len(runs) > README_ROWS:
        log.warning(f"{readme_path}: its table shows the first {README_ROWS} recipes of {len(runs)}; "
                    f"{results_file} has all")
    table = "\n".join(headline_table({name: runs[name] for name in list(runs)[:README_ROWS]},
                                     os.path.relpath(results_file, os.path.dirname(readme_path) or ".")))
    write_text(readme_path, f"{before}{README_BEGIN}\n{table}\n{README_END}{after}")
    written.append(readme_path)
    return written


def mean_by_length(entries):
    """{length: {"exact_match": mean over the runs that have it}} of set summaries' by_length."""
    lengths = {length for entry in entries for length in entry["by_length"]}
    return {length: {"exact_match": statistics.fmean(entry["by_length"][length] for entry in entries
                                                     if length in entry["by_length"])} for length in lengths}
