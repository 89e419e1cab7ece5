"""The results of recipe runs, from their summaries (results/<recipe>/seed-<seed>.json, or
results/<recipe>/<variant>/seed-<seed>.json for a recipe's variants, as recipes.run_seed writes them): each seed's
figures and their spread, docs/results.md with its plots, and README.md's headline table. Nothing here is typed by
hand: rerun a recipe, then scripts/report.py, and every number follows.
"""

import glob
import json
import logging
import os
import re
import statistics

from math_llm.errors import DataError
from math_llm.files import write_text
from math_llm.plots import save_curves, save_length_plot, save_scaling_plot
from math_llm.recipes import SUMMARY_FILE, load_recipe

log = logging.getLogger(__name__)
README_BEGIN, README_END = "<!-- results table: scripts/report.py writes it -->", "<!-- end of results table -->"
CURVES_PLOT, LENGTHS_PLOT, SCALING_PLOT = "results_curves.png", "results_by_length.png", "{recipe}_scaling.png"
README_ROWS = 12  # a front door's table; docs/results.md has every recipe
TARGET = 0.99  # the accuracy whose time the recipe sections report, and that README's row of a sweep looks for
MANY_LENGTHS = 10  # the length plot shows the sets that span more lengths than this (length generalisation)


def load_summaries(results_dir):
    """{recipe name: [summary of each run, by variant and seed]} from results_dir's <recipe>/seed-<seed>.json (as
    recorded in results/) or <recipe>/seed-<seed>/run_summary.json (the run dirs under checkpoints/), and their
    <recipe>/<variant>/... counterparts; an unreadable file is a DataError naming it, and so is a run found twice."""
    runs, seen = {}, {}
    recipe_level = glob.glob(os.path.join(results_dir, "*", "seed-*.json")) + \
        glob.glob(os.path.join(results_dir, "*", "seed-*", SUMMARY_FILE))
    variant_level = glob.glob(os.path.join(results_dir, "*", "*", "seed-*.json")) + \
        glob.glob(os.path.join(results_dir, "*", "*", "seed-*", SUMMARY_FILE))
    for path in sorted(recipe_level + variant_level):
        summary, key = read_summary(path)
        # a recipe's own run one level down (checkpoints/smoke/<recipe>/seed-1) is not a variant's
        if path in variant_level and key[:2] != tuple(os.path.relpath(path, results_dir).split(os.sep)[:2]):
            continue
        if key in seen:
            raise DataError(f"{path}: {run_label(*key)} is also in {seen[key]}; keep one")
        seen[key] = path
        runs.setdefault(summary["recipe"], []).append(summary)
    return {name: sorted(summaries, key=lambda s: (s.get("variant") or "", s["seed"]))
            for name, summaries in sorted(runs.items())}


def read_summary(path):
    """(the summary in `path`, the run it is of: (recipe, variant or None, seed))."""
    try:
        with open(path) as f:
            summary = json.load(f)
        return summary, (summary["recipe"], summary.get("variant"), summary["seed"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not a run summary ({error})") from None


def run_label(recipe, variant, seed):
    return f"recipe {recipe}{f' variant {variant}' if variant else ''} seed {seed}"


def by_variant(summaries, order=()):
    """{variant name (None: the recipe's own runs): its runs}, the variants named in `order` first, in that order,
    then the others as they come."""
    groups = {name: [] for name in order}
    for summary in summaries:
        groups.setdefault(summary.get("variant"), []).append(summary)
    return {name: runs for name, runs in groups.items() if runs}


def has_variants(summaries):
    return any(summary.get("variant") for summary in summaries)


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
    """Each seed's exact match on every set, and their mean, minimum and maximum (per variant, if any)."""
    for variant, runs in by_variant(summaries).items():
        for name in set_names(runs):
            seeds = [s["seed"] for s in runs if name in s["evaluations"]]
            values = exact_matches(runs, name)
            stats = spread(values)
            log.info(f"{' '.join(filter(None, (runs[0]['recipe'], variant)))} {name}: " + " ".join(
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
    layers = f"{model['layers']} layer{'s' if model['layers'] != 1 else ''}"
    return (f"`{model['size']}` ({layers}, width {model['width']}, {model['heads']} heads, "
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
        if len(known.get("by_length", ())) > MANY_LENGTHS:  # length generalisation: an average hides the worst
            row(f"{name} exact match at its worst length", [entry and min(entry["by_length"].values())
                                                           for entry in entries])
        if "edge_cases" in known:
            row(f"{name} edge cases ({known['edge_cases']['count']:,})",
                [entry and entry["edge_cases"]["exact_match"] for entry in entries])
    selection = first["selection"]["set"]
    row(f"best {selection} exact match (chooses the checkpoint)", [s["selection"]["exact_match"] for s in summaries])
    row("selected step", [s["selection"]["step"] for s in summaries], count, with_spread=False)
    row("training steps", [s["training"]["steps"] for s in summaries], count, with_spread=False)
    row("seconds of training steps", [s["training"]["training_seconds"] for s in summaries], seconds)
    target = first["training"].get("stop_at_exact_match") or TARGET  # a run that stops at its target: that one
    row(f"seconds of training steps until {selection} first reached {percent(target)}",
        [seconds_to(s["curve"], target) for s in summaries], seconds)
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
    model = f"`{first['model']['size']}`, {first['model']['num_parameters']:,}"
    if has_variants(summaries):  # the row shows one variant
        summaries, model = headline_variant(summaries)
    others = "; ".join(f"{name} {spread_text(exact_matches(summaries, name))}"
                       for name in set_names(summaries) if name != "test")
    median_seconds = statistics.median(s["training"]["training_seconds"] for s in summaries)
    return (f"| [{first['recipe']}]({results_link}#{first['recipe']}) | {first_sentence(first['description'])} | "
            f"{model} | {first['data']['train_examples']:,} | {median_seconds:,.0f} s | "
            f"{spread_text(exact_matches(summaries, 'test'))} | {others or '-'} | {len(summaries)} |")


def headline_variant(summaries):
    """(the runs of the variant that a recipe's headline row shows, its model cell): the smallest variant with every
    seed at TARGET on the first set the scaling plot shows, else the best on it."""
    set_name = scaling_sets(summaries)[0]
    variants = by_variant(summaries)

    def parameters(variant):
        return variants[variant][0]["model"]["num_parameters"]

    reached = [variant for variant, runs in variants.items()
               if min(exact_matches(runs, set_name), default=0) >= TARGET]
    if reached:
        chosen = min(reached, key=parameters)
        how = f"the smallest of {len(variants)} variants with every seed at {percent(TARGET)} on {set_name}"
    else:
        chosen = max(variants, key=lambda variant: statistics.fmean(exact_matches(variants[variant], set_name) or [0]))
        how = f"the best of {len(variants)} variants on {set_name}, none with every seed at {percent(TARGET)}"
    return variants[chosen], f"`{chosen}`, {parameters(chosen):,}: {how}"


def scaling_sets(summaries):
    """The sets a recipe's variants are compared on: every set but the held-out test split, else the test split."""
    return [name for name in set_names(summaries) if name != "test"] or ["test"]


def variants_section(summaries, order):
    """The Markdown section of a recipe with variants: what it is, a row per variant (in `order`: shape, parameters,
    seeds, exact match on every set over its seeds, training time), its scaling plot and each variant's command."""
    first = summaries[0]
    variants = by_variant(summaries, order)
    names = set_names(summaries)
    lines = [f"### {first['recipe']}", "", first["description"], "",
             f"Recipe [{first['recipe_file']}](../{first['recipe_file']}); {len(variants)} variants; "
             f"{first['data']['train_examples']:,} training problems, format `{first['data']['format']}`; "
             f"machine: {first['machine']}. Exact match: mean (min-max) over a variant's seeds.", "",
             "| Variant | Shape | Parameters | Seeds | " +
             " | ".join(f"{'held-out test' if name == 'test' else name} exact match" for name in names) +
             " | Seconds of training steps (mean) |", "|---" * (5 + len(names)) + "|"]
    for variant, runs in variants.items():
        model = runs[0]["model"]
        cells = [f"`{variant}`", shape_text(model), f"{model['num_parameters']:,}",
                 ", ".join(str(s["seed"]) for s in runs),
                 *(spread_over_seeds(exact_matches(runs, name)) for name in names),
                 seconds(statistics.fmean(s["training"]["training_seconds"] for s in runs))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ["", f"![exact match against unique parameters, one point per seed]"
                        f"({SCALING_PLOT.format(recipe=first['recipe'])})", "", "```bash",
                    *(command for runs in variants.values() for command in command_of(runs)), "```"]


def shape_text(model):
    """The model's shape as ModelConfig.shape_text writes it (summaries written before it was recorded give less),
    and its positions where they are not learned ones."""
    shape = model.get("shape") or f"{model['layers']} layers, width {model['width']}, {model['heads']} heads"
    return shape if model["pos_encoding"] == "learned" else f"{shape}, {model['pos_encoding']} positions"


def spread_over_seeds(values):
    if not values:
        return "-"
    return f"{spread_text(values)}, {len(values)} seed{'s' * (len(values) != 1)}"


def scaling_points(summaries):
    """{set name: [{"parameters", "exact_match", "layers", "rank", "pos_encoding"} of each run]}: what the scaling
    plot shows."""
    return {name: [{"parameters": s["model"]["num_parameters"], "exact_match": s["evaluations"][name]["exact_match"],
                    "layers": s["model"]["layers"], "rank": s["model"].get("rank"),
                    "pos_encoding": s["model"]["pos_encoding"]}
                   for s in summaries if name in s["evaluations"]] for name in scaling_sets(summaries)}


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
    not_run = [path for path in recipe_paths if recipe_name(path) not in runs]
    variant_orders = {name: [variant.name for variant in load_recipe(path).variants] for path in recipe_paths
                      if (name := recipe_name(path)) in runs and has_variants(runs[name])}
    written = []
    curves = {name: [[(point["training_seconds"], point["exact_match"]) for point in s["curve"]] for s in summaries]
              for name, summaries in runs.items()}
    curves_file = os.path.join(docs_dir, CURVES_PLOT)
    if save_curves(curves, curves_file, "exact match on the set that chooses the checkpoint (val, or the recipe's "
                                        "selection set)"):
        written.append(curves_file)
    by_length = length_curves(runs)
    lengths_file = os.path.join(docs_dir, LENGTHS_PLOT)
    if by_length:
        save_length_plot(by_length, lengths_file, "exact match by length (mean over seeds)")
        written.append(lengths_file)
    for name, summaries in runs.items():
        if has_variants(summaries):
            scaling_file = os.path.join(docs_dir, SCALING_PLOT.format(recipe=name))
            save_scaling_plot(scaling_points(summaries), scaling_file, f"{name}: one point per seed", TARGET)
            written.append(scaling_file)

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
    for name, summaries in runs.items():
        lines += (variants_section(summaries, variant_orders.get(name, ())) if has_variants(summaries)
                  else recipe_section(summaries)) + [""]
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


def recipe_name(path):
    return os.path.splitext(os.path.basename(path))[0]


def length_curves(runs):
    """{"<recipe> [<variant>] <set>": exact match by length, mean over the seeds} of the sets that span more than
    MANY_LENGTHS lengths in every run."""
    curves = {}
    for name, summaries in runs.items():
        for variant, group in by_variant(summaries).items():
            for set_name in set_names(group):
                entries = [s["evaluations"].get(set_name, {}) for s in group]
                if all(len(entry.get("by_length", ())) > MANY_LENGTHS for entry in entries):
                    curves[" ".join(filter(None, (name, variant, set_name)))] = mean_by_length(entries)
    return curves


def mean_by_length(entries):
    """{length: {"exact_match": mean over the runs that have it}} of set summaries' by_length."""
    lengths = {length for entry in entries for length in entry["by_length"]}
    return {length: {"exact_match": statistics.fmean(entry["by_length"][length] for entry in entries
                                                     if length in entry["by_length"])} for length in lengths}
