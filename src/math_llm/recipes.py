"""Experiments as files. A recipe (recipes/<name>.yaml) holds one experiment whole: the data it generates, its
training flags, the set that chooses its checkpoint, the extra sets it is evaluated on, and optionally variants (the
shapes of a sweep: each its own flags over the training section, on the same data). `run_seed` runs one seed of it
(or of one variant) end to end: it generates what is missing, trains (resuming the run it finds, as train.py does),
evaluates every set, and writes the run's summary beside its checkpoints. `smoke` shrinks any recipe to a run of
seconds.
"""

import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, replace

import yaml

from math_llm import checkpoint as ckpt
from math_llm.data import SPLITS, dataset_present, read_metadata, read_split, split_path, write_dataset
from math_llm.data_generation import DataConfig
from math_llm.errors import ConfigError
from math_llm.evaluation import EvalConfig, evaluate_checkpoint, same_path
from math_llm.files import write_json
from math_llm.flags import attribute, config_from_dict, config_from_flags, flag_fields, flag_values
from math_llm.trainer import TRAINER_STATE_FILE, TRAINING_CONFIG_FILE, TrainConfig, train

log = logging.getLogger(__name__)
RECIPE_KEYS = ("description", "data", "dataset", "vary_data_with_seed", "seeds", "train", "selection", "evaluations",
               "variants")
SET_FLAGS = ("edge_cases",)  # what an evaluation set may say besides its data settings
NAME = re.compile(r"[a-z][a-z0-9_]*")  # of an evaluation set or a variant
DIRECTORY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
RESERVED_SET_NAMES = ("train", "val", "test", "selection")
RUNNER_FLAGS = ("data_dir", "output_dir", "seed", "selection_data")  # a recipe run sets these itself
SUMMARY_FILE = "run_summary.json"
# Smoke mode: a one-layer width-32 model, a few hundred problems, a few steps; the rest of the recipe (format,
# operations, position encoding, losses, precision) as written, so a recipe that no longer fits the code fails here.
SMOKE_TRAIN = {"model_size": "tiny", "num_layers": 1, "hidden_size": 32, "num_heads": 2, "ffn_size": 64,
               "num_epochs": 1, "batch_size": 16, "gradient_accumulation_steps": 1, "warmup_steps": 2,
               "logging_steps": 4, "eval_steps": 8, "save_steps": 8, "eval_batch_size": 64, "compile": False,
               "device": "auto", "wandb": False}
SMOKE_TRAIN_EXAMPLES, SMOKE_SET_EXAMPLES = 300, 40


@dataclass(frozen=True)
class EvaluationSet:
    name: str
    data: DataConfig  # test_only: one test.json
    edge_cases: bool = True


@dataclass(frozen=True)
class Variant:
    name: str
    train: dict  # the training flags it sets over the recipe's train section
    seeds: tuple | None  # its own replicates (None: the recipe's seeds)


@dataclass(frozen=True)
class Recipe:
    name: str  # the file's name without .yaml
    path: str
    description: str
    data: DataConfig
    dataset: str  # the data's directory under the data root: recipes with the same data share it
    vary_data_with_seed: bool  # each seed generates its own data with that seed (a data replicate), else one dataset
    seeds: tuple  # the replicates run when no --seeds is given
    train: dict  # training flags {field name: value}, as TrainConfig's flags
    selection: DataConfig | None  # the set that chooses best_model.pt (None: val)
    evaluations: tuple  # EvaluationSets besides the held-out test split
    variants: tuple = ()  # Variants, in file order
    variant: str | None = None  # the variant this recipe runs as (with_variant): train and seeds are already its

    @property
    def label(self):
        return f"{self.name} {self.variant}" if self.variant else self.name

    def with_variant(self, name):
        """The recipe as its variant `name` runs: the variant's flags over the train section, its own seeds if it
        has them; the data and evaluation sets stay the recipe's."""
        chosen = next(variant for variant in self.variants if variant.name == name)
        return replace(self, variant=name, train={**self.train, **chosen.train}, seeds=chosen.seeds or self.seeds)

    def data_config(self, seed):
        return replace(self.data, seed=seed) if self.vary_data_with_seed else self.data

    def data_dir(self, data_root, seed):
        base = os.path.join(data_root, self.dataset)
        return os.path.join(base, f"seed-{seed}") if self.vary_data_with_seed else base

    def set_dir(self, data_root, name):
        return os.path.join(data_root, self.dataset, name)

    def run_name(self, seed):
        """<recipe>/seed-<seed>, or <recipe>/<variant>/seed-<seed>: a run's place under the output root and in
        results/."""
        return os.path.join(self.name, *([self.variant] if self.variant else []), f"seed-{seed}")

    def run_dir(self, output_root, seed):
        return os.path.join(output_root, self.run_name(seed))

    def selection_path(self, data_root):
        return split_path(self.set_dir(data_root, "selection"), "test") if self.selection else None

    def train_config(self, base, data_root, output_root, seed):
        """`base` (a TrainConfig from the recipe's flags and the command line) placed in this recipe's dirs."""
        return replace(base, data_dir=self.data_dir(data_root, seed), output_dir=self.run_dir(output_root, seed),
                       seed=seed, selection_data=self.selection_path(data_root))

    def datasets(self, data_root, seed):
        """{"train": (directory, DataConfig), "selection": ..., each evaluation set's name: ...}: every dataset that
        a run of `seed` reads."""
        sets = {"train": (self.data_dir(data_root, seed), self.data_config(seed))}
        if self.selection:
            sets["selection"] = (self.set_dir(data_root, "selection"), self.selection)
        return sets | {s.name: (self.set_dir(data_root, s.name), s.data) for s in self.evaluations}


def load_recipe(path):
    """The recipe in the YAML file `path`; anything wrong with it is a ConfigError naming the file and the key."""
    try:
        with open(path, encoding="utf-8") as f:
            content = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: recipe file not found (the recipes are in recipes/)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read it ({error})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise ConfigError(f"{path}{f' line {mark.line + 1}' if mark else ''}: not valid YAML "
                          f"({getattr(error, 'problem', None) or error})") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping with the keys {', '.join(RECIPE_KEYS)}")
    if unknown := sorted(set(content) - set(RECIPE_KEYS)):
        raise ConfigError(f"{path}: unknown keys {', '.join(unknown)}; a recipe has {', '.join(RECIPE_KEYS)}")
    if missing := [key for key in ("description", "data") if key not in content]:
        raise ConfigError(f"{path}: missing {' and '.join(missing)}")
    name = os.path.splitext(os.path.basename(path))[0]
    description, dataset = content["description"], content.get("dataset", name)
    if not (isinstance(description, str) and description.strip()):
        raise ConfigError(f"{path}: description must be text, got {description!r}")
    if not (isinstance(dataset, str) and DIRECTORY_NAME.fullmatch(dataset)):
        raise ConfigError(f"{path}: dataset must be a directory name (letters, digits, _ and -), got {dataset!r}")
    vary_data_with_seed = content.get("vary_data_with_seed", False)
    if not isinstance(vary_data_with_seed, bool):
        raise ConfigError(f"{path}: vary_data_with_seed must be true or false, got {vary_data_with_seed!r}")
    data = data_config(content["data"], f"{path} data")
    if data.test_only:
        raise ConfigError(f"{path} data: test_only leaves nothing to train on; extra test sets go under evaluations")
    train_flags = train_settings(content.get("train"), f"{path} train")
    selection = (test_set_config(content["selection"], f"{path} selection")
                 if content.get("selection") is not None else None)
    evaluations = content.get("evaluations") or {}
    if not isinstance(evaluations, dict):
        raise ConfigError(f"{path} evaluations: expected a mapping of set names to settings")
    evaluations = tuple(evaluation_set(set_name, values, f"{path} evaluations {set_name}")
                        for set_name, values in evaluations.items())
    seeds = seed_list(content.get("seeds", [42]), path)
    variants = content.get("variants") or {}
    if not isinstance(variants, dict):
        raise ConfigError(f"{path} variants: expected a mapping of variant names to training flags")
    variants = tuple(read_variant(variant_name, values, train_flags, f"{path} variants {variant_name}")
                     for variant_name, values in variants.items())
    recipe = Recipe(name, shown_path(path), description.strip(), data, dataset, vary_data_with_seed, seeds,
                    train_flags, selection, evaluations, variants)
    check_set_seeds(recipe, {seed for run in chosen_variants(recipe) for seed in run.seeds})
    return recipe


def shown_path(path):
    """`path` relative to the working directory when it lies inside it (recipes/add10.yaml, however it was typed),
    else absolute: the form summaries record and the report links."""
    relative = os.path.relpath(path)
    return os.path.abspath(path) if relative.startswith(os.pardir) else relative


def seed_list(seeds, source):
    if not (isinstance(seeds, list) and seeds and all(type(seed) is int for seed in seeds)
            and len(set(seeds)) == len(seeds)):
        raise ConfigError(f"{source}: seeds must be a non-empty list of distinct integers, got {seeds!r}")
    return tuple(seeds)


def train_settings(values, source, base=None):
    """The train section (or a variant's flags over `base`, the train section's) as {flag field name: value},
    checked by building the TrainConfig they describe together."""
    train_flags = flag_values(TrainConfig, values or {}, source)
    if runner_set := [flag for flag in RUNNER_FLAGS if flag in train_flags]:
        raise ConfigError(f"{source}: {', '.join(runner_set)} are set by the recipe's run (data and output roots, "
                          f"--seeds, the selection section); remove them")
    try:
        config_from_flags(TrainConfig, {**(base or {}), **train_flags})
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    return train_flags


def data_config(values, source):
    values = flag_values(DataConfig, {} if values is None else values, source)
    try:
        return DataConfig(**values)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def test_set_config(values, source):
    return data_config({**(values or {}), "test_only": True}, source)


def evaluation_set(name, values, source):
    if not (isinstance(name, str) and NAME.fullmatch(name)) or name in RESERVED_SET_NAMES:
        raise ConfigError(f"{source}: a set's name is lower-case letters, digits and _ and not one of "
                          f"{', '.join(RESERVED_SET_NAMES)}")
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
    values = dict(values or {})
    flags = {key: values.pop(key) for key in SET_FLAGS if key in values}
    if not all(isinstance(value, bool) for value in flags.values()):
        raise ConfigError(f"{source}: {', '.join(SET_FLAGS)} must be true or false")
    return EvaluationSet(name, test_set_config(values, source), **flags)


def read_variant(name, values, train_flags, source):
    """A variant: training flags over the recipe's `train_flags`, and optionally `seeds` of its own."""
    if not (isinstance(name, str) and NAME.fullmatch(name)):
        raise ConfigError(f"{source}: a variant's name is lower-case letters, digits and _, starting with a letter")
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of training flags, got {type(values).__name__}")
    values = dict(values or {})
    seeds = seed_list(values.pop("seeds"), source) if "seeds" in values else None
    return Variant(name, train_settings(values, source, base=train_flags), seeds)


def chosen_variants(recipe, names=None, flag="--variants"):
    """The recipe as each variant in `names` runs it (None: every variant), in file order; a recipe without
    variants is its own one run. An unknown name is a ConfigError naming `flag` and the known ones."""
    known = [variant.name for variant in recipe.variants]
    if names is None:
        return [recipe.with_variant(name) for name in known] or [recipe]
    if not known:
        raise ConfigError(f"{flag}: {recipe.path} has no variants")
    if unknown := [name for name in names if name not in known]:
        raise ConfigError(f"{flag}: {recipe.path} has no variant {', '.join(unknown)}; its variants are "
                          f"{', '.join(known)}")
    return [recipe.with_variant(name) for name in known if name in names]


def training_recipe(path, variant_name):
    """train.py --config PATH [--variant NAME]: the recipe as that variant runs it; None without --config. A recipe
    with variants needs --variant, one without refuses it."""
    if path is None:
        if variant_name is not None:
            raise ConfigError("--variant chooses a variant of the recipe that --config names; add --config RECIPE")
        return None
    recipe = load_recipe(path)
    if recipe.variants and variant_name is None:
        raise ConfigError(f"{recipe.path} has variants ({', '.join(v.name for v in recipe.variants)}); choose one "
                          f"with --variant NAME")
    return chosen_variants(recipe, None if variant_name is None else [variant_name], "--variant")[0]


def check_set_seeds(recipe, seeds):
    """The extra sets are drawn with seeds of their own: one equal to the training data's would draw the training
    problems again (where the settings match) instead of held-out ones, and two sets with one seed would be one set
    (the checkpoint chosen and scored on the same problems)."""
    data_seeds = set(seeds) if recipe.vary_data_with_seed else {recipe.data.seed}
    named = ([("selection", recipe.selection)] if recipe.selection else []) + [(s.name, s.data)
                                                                                 for s in recipe.evaluations]
    set_seeds = [config.seed for _, config in named]
    if len(set(set_seeds)) < len(set_seeds):
        raise ConfigError(f"{recipe.path}: the selection and evaluation sets need a seed each, got "
                          f"{', '.join(f'{name} {config.seed}' for name, config in named)}")
    for set_name, config in named:
        if config.seed in data_seeds:
            raise ConfigError(f"{recipe.path}: the {set_name} set's seed {config.seed} is also a seed of the training "
                              f"data (seeds {', '.join(map(str, sorted(data_seeds)))}); give the set a seed of its "
                              f"own, or run other seeds")


def smoke(recipe):
    """The recipe shrunk to a run of seconds (see SMOKE_TRAIN), first seed only."""
    def shrink(config, examples):
        return replace(config, num_examples=min(config.num_examples, examples))
    return replace(recipe, data=replace(shrink(recipe.data, SMOKE_TRAIN_EXAMPLES), val_fraction=0.1, test_fraction=0.1),
                   seeds=recipe.seeds[:1], train={**recipe.train, **SMOKE_TRAIN},
                   selection=recipe.selection and shrink(recipe.selection, SMOKE_SET_EXAMPLES),
                   evaluations=tuple(replace(s, data=shrink(s.data, SMOKE_SET_EXAMPLES)) for s in recipe.evaluations))


def parse_seeds(text):
    try:
        seeds = tuple(int(seed) for seed in text.split(","))
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers such as 1,2,3, got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds lists a seed twice: {text}")
    return seeds


def in_recipe_dirs(recipe, config, explicit_flags, data_root="data", output_root="checkpoints"):
    """train.py --config: (config, the function that generates its data) for a run of the recipe's training section
    in the recipe's data and run dirs, except where --data-dir, --output-dir or --selection-data say otherwise."""
    if "seed" not in explicit_flags:  # the recipe's first seed, not train.py's default
        config = replace(config, seed=recipe.seeds[0])
    placed = recipe.train_config(config, data_root, output_root, config.seed)
    given = {name: getattr(config, name) for name in ("data_dir", "output_dir", "selection_data")
             if name in explicit_flags}
    check_set_seeds(recipe, [config.seed])
    names = [name for name, flag in (("train", "data_dir"), ("selection", "selection_data")) if flag not in given]
    return replace(placed, **given), lambda: prepare_data(recipe, data_root, config.seed, names)


# ---------------------------------------------------------------------------------------------------------------
# Running a seed

def prepare_data(recipe, data_root, seed, names=None):
    """Generates each dataset of the run (of `names` among Recipe.datasets, default all) that is missing; one
    generated with other settings than the recipe's now are is a ConfigError (never silently replaced or used)."""
    for name, (directory, config) in recipe.datasets(data_root, seed).items():
        if names is not None and name not in names:
            continue
        splits = ("test",) if config.test_only else SPLITS
        if not dataset_present(directory, splits):
            log.info(f"{recipe.name}: generating {directory}")
            write_dataset(directory, config)
            continue
        path = split_path(directory, splits[0])
        saved = {key: value for key, value in read_metadata(path).items() if key != "split"}
        if saved != asdict(config):
            differences = ", ".join(f"{key} {saved.get(key)!r} (recipe: {value!r})"
                                    for key, value in asdict(config).items() if saved.get(key) != value)
            raise ConfigError(f"{path}: generated with other settings than {recipe.path} has: {differences}; delete "
                              f"{directory} to have it generated again")


def run_seed(recipe, config, explicit_flags, data_root, results_dir, command):
    """Runs the recipe's seed `config.seed` (config: from Recipe.train_config) end to end and returns its summary
    (None when a signal stopped the training first): writes <run dir>/run_summary.json, and a copy to
    <results_dir>/<recipe>[/<variant>]/seed-<seed>.json unless results_dir is None or the run's settings differ from
    the recipe's (then the figures are not the recipe's)."""
    log.info(f"recipe {recipe.label}, seed {config.seed}: {recipe.description}")
    explicit_flags = explicit_flags | set(RUNNER_FLAGS)  # a run resumed under other data must say so
    test_results = train(config, explicit_flags, prepare=lambda: prepare_data(recipe, data_root, config.seed))
    if test_results is None:
        return None
    results = {"test": test_results}
    for test_set in recipe.evaluations:
        results[test_set.name] = evaluate_set(config, test_set, recipe.set_dir(data_root, test_set.name))
    summary = run_summary(recipe, config.output_dir, results, command)
    write_json(os.path.join(config.output_dir, SUMMARY_FILE), summary)
    if summary["overrides"] and results_dir is not None:
        log.warning(f"not recorded in {results_dir}/: the run's settings differ from {recipe.path} "
                    f"({', '.join(f'{name} {value!r}' for name, value in summary['overrides'].items())})")
    elif results_dir is not None:
        write_json(os.path.join(results_dir, f"{recipe.run_name(config.seed)}.json"), summary)
    log.info(f"{recipe.label} seed {config.seed}: " + " | ".join(
        f"{name} {entry['exact_match']:.4f}" for name, entry in summary["evaluations"].items()) +
        f" | summary in {os.path.join(config.output_dir, SUMMARY_FILE)}")
    return summary


def evaluate_set(config, test_set, directory):
    """evaluate.py's job on one extra set, unless its results are there already: newer than both best_model.pt and
    the set's file, and with edge cases as the recipe asks."""
    output_file = os.path.join(config.output_dir, f"eval_{test_set.name}.json")
    best_model, data_path = os.path.join(config.output_dir, ckpt.BEST_MODEL), split_path(directory, "test")
    if os.path.exists(output_file) and os.path.getmtime(output_file) >= max(map(os.path.getmtime,
                                                                                 (best_model, data_path))):
        with open(output_file) as f:
            saved = json.load(f)
        if same_path(saved.get("data_path") or "", data_path) and ("edge_cases" in saved) == test_set.edge_cases:
            return saved
    return evaluate_checkpoint(EvalConfig(
        checkpoint=best_model, data_path=data_path, batch_size=config.eval_batch_size, device=config.device,
        edge_cases=test_set.edge_cases, num_mistakes=5, output_file=output_file))


def overrides(recipe, run_config):
    """{flag: value} of the run's settings that change what it computes and differ from what the recipe (with its
    variant's flags) says (flags a resume may change, such as --no-wandb or --device, do not count)."""
    as_written = config_from_flags(TrainConfig, recipe.train)
    return {name: attribute(run_config, path) for name, (path, field) in flag_fields(TrainConfig).items()
            if name not in RUNNER_FLAGS and not field.metadata["resumable"]
            and attribute(run_config, path) != attribute(as_written, path)}


def run_summary(recipe, output_dir, results, command):
    """What the report reads of a run: the recipe, its variant and its command, the model, data and time as the run
    has them, the selected step, the exact match on every set (with how many of its problems the training split
    holds), and the selection curve. A summary written again for an unchanged run keeps its command and time."""
    def read(name):
        with open(os.path.join(output_dir, name)) as f:
            return json.load(f)
    layout, state = read(TRAINING_CONFIG_FILE), read(TRAINER_STATE_FILE)
    run_config = config_from_dict(TrainConfig, layout["train_config"], os.path.join(output_dir, TRAINING_CONFIG_FILE))
    shape = run_config.model
    training_problems = set(read_split(split_path(run_config.data_dir, "train"))[0])
    curve_key = f"{state['selected_on']}/exact_match"
    summary = {
        "recipe": recipe.name, "variant": recipe.variant, "description": recipe.description,
        "recipe_file": recipe.path, "seed": run_config.seed,
        "command": command, "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": layout["machine"],
        "overrides": overrides(recipe, run_config),
        "model": {"size": shape.model_size, "layers": shape.num_layers, "width": shape.hidden_size,
                  "heads": shape.num_heads, "head_dim": shape.attention_head_size, "ffn": shape.ffn_size,
                  "norm": shape.norm, "mlp": shape.mlp, "bias": shape.bias, "tie_embeddings": shape.tie_embeddings,
                  "rank": shape.rank, "pos_encoding": shape.pos_encoding, "shape": shape.shape_text,
                  "num_parameters": layout["num_parameters"]},
        "data": {"format": layout["data_format"], "train_examples": layout["train_examples"],
                 "data_dir": run_config.data_dir},
        "training": {"steps": state["step"], "global_batch_size": layout["global_batch_size"],
                     "training_seconds": state["training_seconds"],
                     "evaluation_seconds": state["evaluation_seconds"],
                     "stop_at_exact_match": run_config.stop_at_exact_match, "reached_at": state.get("reached_at")},
        "selection": {"set": state["selected_on"],
                      "file": run_config.selection_data or split_path(run_config.data_dir, "val"),
                      "step": results["test"]["model_step"], "exact_match": state["best_exact_match"]},
        "evaluations": {name: set_summary(entry, training_problems) for name, entry in results.items()},
        "curve": [{"step": entry["step"], "training_seconds": entry["train/training_seconds"],
                   "exact_match": entry[curve_key]} for entry in state["log_history"] if curve_key in entry],
    }
    previous_path = os.path.join(output_dir, SUMMARY_FILE)
    if os.path.exists(previous_path):
        with open(previous_path) as f:
            previous = json.load(f)
        unchanged = {key: value for key, value in previous.items() if key not in ("command", "written")}
        if unchanged == {key: value for key, value in summary.items() if key not in ("command", "written")}:
            summary.update(command=previous["command"], written=previous["written"])
    return summary


def set_summary(results, training_problems):
    examples = read_split(results["data_path"])[0]
    summary = {"file": results["data_path"], "num_examples": results["num_examples"],
               "exact_match": results["exact_match"],
               "in_training": sum(example in training_problems for example in examples)}
    if "edge_cases" in results:
        summary["edge_cases"] = {key: results["edge_cases"][key] for key in ("exact_match", "count")}
    if len(results["exact_match_by_operation"]) > 1:
        summary["by_operation"] = {op: cell["exact_match"] for op, cell in results["exact_match_by_operation"].items()}
    if len(results["exact_match_by_length"]) > 1:
        summary["by_length"] = {length: cell["exact_match"] for length, cell in results["exact_match_by_length"].items()}
    return summary
