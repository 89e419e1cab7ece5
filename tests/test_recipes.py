"""Recipes: every file in recipes/ loads and smoke-runs end to end; a bad recipe is a one-line error naming the file
and the key; the command line overrides a recipe's training section; stale data is refused; a recipe's variants run
in dirs of their own on its data; the report is built from the runs' summaries."""

import glob
import json
import os
import shlex
import textwrap

import pytest

from math_llm.benchmarking import SPEEDRUNS, recipe_path
from math_llm.data import write_splits
from math_llm.data_generation import DataConfig, generate_splits
from math_llm.errors import ConfigError, DataError
from math_llm.recipes import (SMOKE_TRAIN, check_set_seeds, chosen_variants, in_recipe_dirs, load_recipe, parse_seeds,
                               prepare_data, smoke, training_recipe)
from math_llm.flags import config_from_flags, parse_config
from math_llm.results import README_BEGIN, README_END, load_summaries, write_report
from math_llm.trainer import TrainConfig
from scripts import train as train_script
from scripts.run_recipe import build_parser
from tests.helpers import REPO_ROOT, run_script

RECIPES = sorted(glob.glob(os.path.join(REPO_ROOT, "recipes", "*.yaml")))
RECIPE_NAMES = [os.path.splitext(os.path.basename(path))[0] for path in RECIPES]


def write_recipe(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_every_recipe_loads_and_its_smoke_version_is_small():
    assert len(RECIPES) >= 10
    for path in RECIPES:
        recipe = load_recipe(path)
        assert recipe.description and recipe.seeds
        config_from_flags(TrainConfig, recipe.train)  # its flags make a valid config (choices, ranges)
        shrunk = smoke(recipe)
        assert shrunk.data.num_examples <= 300 and shrunk.seeds == recipe.seeds[:1]
        assert all(s.data.num_examples <= 40 for s in shrunk.evaluations)
        assert {key: shrunk.train[key] for key in SMOKE_TRAIN} == SMOKE_TRAIN
        assert shrunk.data.format == recipe.data.format and shrunk.data.operations == recipe.data.operations


def test_every_speedrun_is_judged_on_sets_that_both_its_recipes_score_and_stops_where_its_recipe_does():
    for name, speedrun in SPEEDRUNS.items():
        recipe, baseline = load_recipe(recipe_path(speedrun.recipe)), load_recipe(recipe_path(speedrun.baseline))
        for scored in (recipe, baseline):
            assert set(speedrun.sets) <= {"test", *(s.name for s in scored.evaluations)}, (name, scored.name)
        assert recipe.train.get("stop_at_exact_match") == speedrun.stop_at, name


@pytest.mark.parametrize("text, message", [
    ("data: {}\n", "missing description"),
    ("description: x\ndata: {max_digits: 3}\nmodel: tiny\n", "unknown keys model"),
    ("description: x\ndata: {max_digit: 3}\n", "unknown setting 'max_digit'"),
    ("description: x\ndata: {max_digits: three}\n", "max_digits must be int"),
    ("description: x\ndata: {max_digits: 0}\n", "--max-digits must be between 1"),
    ("description: x\ndata: {}\ntrain: {learning_rate: fast}\n", "learning_rate must be float"),
    ("description: x\ndata: {}\ntrain: {output_dir: elsewhere}\n", "output_dir are set by the recipe's run"),
    ("description: x\ndata: {}\nseeds: 3\n", "seeds must be a non-empty list"),
    ("description: x\ndata: {}\nseeds: [1, 1]\n", "seeds must be a non-empty list of distinct integers"),
    ("description:\ndata: {}\n", "description must be text"),
    ("description: x\ndata: {}\ndataset: ../elsewhere\n", "dataset must be a directory name"),
    ("description: x\ndata: {}\nvary_data_with_seed: 'false'\n", "vary_data_with_seed must be true or false"),
    ("description: x\ndata: {}\ntrain: {model_size: huge}\n", "train: --model-size must be one of"),
    ("description: x\ndata: {}\ntrain: {num_epochs: 0}\n", "train: --num-epochs must be at least 1"),
    ("description: x\ndata: {}\nselection: {seed: 7}\nevaluations: {long: {seed: 7}}\n",
     "need a seed each, got selection 7, long 7"),
    ("description: x\ndata: {}\nselection: {}\n", "selection set's seed 42 is also a seed of the training data"),
    ("description: x\ndata: {}\nevaluations: {test: {max_digits: 3}}\n", "not one of train, val, test"),
    ("description: x\ndata: {seed: 7}\nevaluations: {long: {max_digits: 3, seed: 7}}\n", "long set's seed 7"),
    ("description: x\ndata: {}\nevaluations: {long: {edge_cases: maybe}}\n", "edge_cases must be true or false"),
    ("description: x: y\ndata: {}\n", "line 1: not valid YAML (mapping values are not allowed here)"),
    ("description: x\ndata: {}\nvariants: [a, b]\n", "variants: expected a mapping of variant names"),
    ("description: x\ndata: {}\nvariants: {L1-w8: {}}\n", "variants L1-w8: a variant's name is lower-case"),
    ("description: x\ndata: {}\nvariants: {l1: 3}\n", "variants l1: expected a mapping of training flags, got int"),
    ("description: x\ndata: {}\nvariants: {l1: {num_layer: 1}}\n", "variants l1: unknown setting 'num_layer'"),
    ("description: x\ndata: {}\nvariants: {l1: {rank: two}}\n", "variants l1: rank must be int or null"),
    ("description: x\ndata: {}\nvariants: {l1: {seeds: [1, 1]}}\n", "variants l1: seeds must be a non-empty list"),
    ("description: x\ndata: {}\nvariants: {l1: {seed: 3}}\n", "variants l1: seed are set by the recipe's run"),
    ("description: x\ndata: {}\ntrain: {model_size: tiny, hidden_size: 12}\nvariants: {l1: {num_heads: 8}}\n",
     "variants l1: --hidden-size 12 is not divisible by --num-heads 8"),  # each valid alone, not together
    ("description: x\ndata: {}\nvary_data_with_seed: true\nevaluations: {long: {seed: 7}}\n"
     "variants: {l1: {seeds: [7]}}\n", "long set's seed 7 is also a seed of the training data"),
])
def test_a_bad_recipe_is_one_config_error_naming_the_file(tmp_path, text, message):
    path = write_recipe(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_recipe(path)
    assert str(error.value).startswith(path) and message in str(error.value), str(error.value)
    assert "\n" not in str(error.value)


def test_yaml_numbers_take_their_flags_types(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, """
        description: x
        data: {max_digits: 3, val_fraction: 0.1}
        train: {learning_rate: 1e-3, num_epochs: 2, running_sum_loss: 1, group_by_length: true}
    """))
    assert recipe.train == {"learning_rate": 0.001, "num_epochs": 2, "running_sum_loss": 1.0, "group_by_length": True}
    assert type(recipe.train["running_sum_loss"]) is float


def test_the_command_line_overrides_the_recipe_and_both_count_as_given(tmp_path):
    path = write_recipe(tmp_path, """
        description: x
        data: {}
        train: {model_size: tiny, learning_rate: 3e-3, num_epochs: 4, group_by_length: true}
    """)
    recipe = load_recipe(path)
    config, _, explicit = parse_config(build_parser(), TrainConfig, [path, "--num-epochs", "2", "--no-group-by-length"],
                                       recipe.train)
    assert (config.model.model_size, config.learning_rate, config.num_epochs) == ("tiny", 0.003, 2)
    assert config.group_by_length is False  # a switch the recipe turned on, turned off again
    assert config.batch_size == TrainConfig().batch_size  # neither the recipe nor the command line set it
    assert {"model_size", "learning_rate", "num_epochs"} <= explicit and "batch_size" not in explicit
    placed = recipe.train_config(config, "d", "c", 5)
    assert (placed.data_dir, placed.output_dir, placed.seed, placed.selection_data) == ("d/r", "c/r/seed-5", 5, None)


def test_a_seed_that_would_redraw_an_extra_set_as_training_data_is_refused(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, """
        description: x
        data: {}
        vary_data_with_seed: true
        seeds: [1, 2]
        evaluations: {long: {min_digits: 3, max_digits: 3, seed: 7}}
    """))
    check_set_seeds(recipe, [3])
    with pytest.raises(ConfigError, match="the long set's seed 7 is also a seed of the training data"):
        check_set_seeds(recipe, [1, 7])


def test_seeds_parse_or_fail_in_one_line():
    assert parse_seeds("1,2,3") == (1, 2, 3)
    for bad in ("1,x", "1,1"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


SWEEP = """
    description: A sweep of shapes.
    data: {num_examples: 300, max_digits: 2, val_fraction: 0.1, test_fraction: 0.1}
    evaluations: {long: {num_examples: 40, min_digits: 3, max_digits: 3, seed: 7, edge_cases: false}}
    seeds: [1]
    train: {model_size: tiny, num_layers: 1, num_epochs: 1, batch_size: 32, learning_rate: 3e-3, warmup_steps: 2,
            eval_steps: 4, save_steps: 100, logging_steps: 4, eval_batch_size: 64}
    variants:
      w8_r2: {hidden_size: 8, rank: 2, seeds: [1, 2]}
      w16: {hidden_size: 16}
"""


def test_a_variant_runs_the_train_section_under_its_flags_with_its_seeds_in_its_own_dir(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, SWEEP, "sweep.yaml"))
    narrow, wide = chosen_variants(recipe)  # file order
    assert (narrow.variant, narrow.seeds, wide.variant, wide.seeds) == ("w8_r2", (1, 2), "w16", (1,))
    assert narrow.train == {**recipe.train, "hidden_size": 8, "rank": 2} and wide.train["num_layers"] == 1
    assert narrow.run_dir("c", 2) == os.path.join("c", "sweep", "w8_r2", "seed-2")
    assert narrow.datasets("d", 2) == recipe.datasets("d", 1)  # every variant and seed: the recipe's data
    assert [run.variant for run in chosen_variants(recipe, ["w16", "w8_r2"])] == ["w8_r2", "w16"]
    shrunk = smoke(wide)
    assert shrunk.variant == "w16" and shrunk.train["hidden_size"] == SMOKE_TRAIN["hidden_size"]


def test_an_unknown_variant_or_variants_of_a_recipe_without_them_is_a_one_line_error(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, SWEEP, "sweep.yaml"))
    plain = load_recipe(write_recipe(tmp_path, "description: x\ndata: {}\n"))
    assert chosen_variants(plain) == [plain]
    with pytest.raises(ConfigError, match=r"^--variants: .*sweep.yaml has no variant w4; its variants are w8_r2, w16$"):
        chosen_variants(recipe, ["w16", "w4"])
    with pytest.raises(ConfigError, match=r"^--variants: .*r.yaml has no variants$"):
        chosen_variants(plain, ["w16"])


def test_train_py_needs_the_variant_of_a_recipe_with_variants_and_trains_it_in_its_run_dir(tmp_path):
    path, plain = write_recipe(tmp_path, SWEEP, "sweep.yaml"), write_recipe(tmp_path, "description: x\ndata: {}\n")
    for config, variant, message in [(path, None, r"has variants \(w8_r2, w16\); choose one with --variant NAME"),
                                     (path, "w4", "--variant: .* has no variant w4"),
                                     (plain, "w16", "--variant: .* has no variants"),
                                     (None, "w16", "--variant chooses a variant of the recipe that --config names")]:
        with pytest.raises(ConfigError, match=message):
            training_recipe(config, variant)
    recipe = training_recipe(path, "w8_r2")
    argv = ["--config", path, "--variant", "w8_r2", "--learning-rate", "1e-2"]
    config, _, explicit = parse_config(train_script.build_parser(), TrainConfig, argv, recipe.train)
    config, _ = in_recipe_dirs(recipe, config, explicit, "d", "c")
    assert (config.model.hidden_size, config.model.rank, config.learning_rate) == (8, 2, 0.01)
    assert (config.seed, config.output_dir, config.data_dir) == (1, os.path.join("c", "sweep", "w8_r2", "seed-1"),
                                                                 os.path.join("d", "sweep"))


def test_data_generated_with_other_settings_is_refused_not_replaced(tmp_path):
    path = write_recipe(tmp_path, """
        description: x
        data: {num_examples: 200, max_digits: 2}
        evaluations: {long: {num_examples: 50, min_digits: 3, max_digits: 3, seed: 7}}
    """)
    recipe = load_recipe(path)
    data_root = tmp_path / "data"
    prepare_data(recipe, str(data_root), 42)
    assert json.loads((data_root / "r" / "long" / "test.json").read_text())["metadata"]["min_digits"] == 3
    train_file = data_root / "r" / "train.json"
    before = train_file.read_text()
    prepare_data(recipe, str(data_root), 42)  # all there, same settings: nothing to do
    assert train_file.read_text() == before
    other = DataConfig(num_examples=200, max_digits=3)
    write_splits(str(data_root / "r"), generate_splits(other), other)
    with pytest.raises(ConfigError, match=r"train.json: generated with other settings .* max_digits 3 \(recipe: 2\)"):
        prepare_data(recipe, str(data_root), 42)
    (data_root / "r" / "val.json").unlink()
    with pytest.raises(DataError, match=r"r: missing .*val.json; delete the directory and generate all of train, val"):
        prepare_data(recipe, str(data_root), 42)
    assert not (data_root / "r" / "val.json").exists()  # a partial dataset is never completed behind one's back


@pytest.mark.slow
def test_train_py_takes_a_recipes_training_section_in_its_dirs_and_refuses_to_resume_under_a_changed_one(tmp_path):
    recipe_text = """
        description: x
        data: {num_examples: 300, max_digits: 1}
        selection: {num_examples: 60, max_digits: 1, sampling: uniform, seed: 9}
        train: {model_size: tiny, num_layers: 1, learning_rate: 3e-3, num_epochs: 4, eval_steps: 10}
    """
    path = write_recipe(tmp_path, recipe_text)
    run_script("train.py", "--config", path, "--num-epochs", 1, "--no-wandb", home=tmp_path, cwd=tmp_path)
    run_dir = tmp_path / "checkpoints" / "r" / "seed-42"
    saved = json.loads((run_dir / "training_config.json").read_text())["train_config"]
    assert (saved["learning_rate"], saved["num_epochs"], saved["model"]["num_layers"]) == (0.003, 1, 1)
    assert saved["data_dir"] == os.path.join("data", "r")
    assert saved["selection_data"] == os.path.join("data", "r", "selection", "test.json")
    state = json.loads((run_dir / "trainer_state.json").read_text())
    assert state["selected_on"] == "selection"
    assert any("selection/exact_match" in entry for entry in state["log_history"])
    (tmp_path / "r.yaml").write_text(textwrap.dedent(recipe_text).replace("3e-3", "1e-3"))
    result = run_script("train.py", "--config", path, "--num-epochs", 1, "--no-wandb", home=tmp_path, cwd=tmp_path,
                        check=False)
    error_lines = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert result.returncode == 1 and len(error_lines) == 1, result.stderr
    assert "cannot resume with different settings: --learning-rate 0.001 (run has 0.003)" in error_lines[0]


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Every recipe smoke-run by scripts/run_recipe.py, as a user would: {name: (run dir, output)}."""
    root = tmp_path_factory.mktemp("smoke")
    runs = {}
    for path, name in zip(RECIPES, RECIPE_NAMES):
        result = run_script("run_recipe.py", path, "--smoke", "--no-wandb", "--data-root", root / "data",
                            "--output-root", root / "runs", home=root)
        first_run = chosen_variants(load_recipe(path))[0]  # a recipe with variants smoke-runs its first
        runs[name] = (root / "runs" / first_run.run_name(first_run.seeds[0]), result.stdout + result.stderr)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_every_recipe_smoke_runs_end_to_end(smoke_runs, name):
    run_dir, output = smoke_runs[name]
    recipe = chosen_variants(load_recipe(os.path.join(REPO_ROOT, "recipes", f"{name}.yaml")))[0]
    summary = json.loads((run_dir / "run_summary.json").read_text())
    assert summary["recipe"] == name and summary["seed"] == recipe.seeds[0] and summary["variant"] == recipe.variant
    assert set(summary["evaluations"]) == {"test", *(s.name for s in recipe.evaluations)}
    for set_name, entry in summary["evaluations"].items():
        assert 0 <= entry["exact_match"] <= 1 and entry["num_examples"] > 0
        assert os.path.exists(entry["file"]), set_name
    assert summary["selection"]["set"] == ("selection" if recipe.selection else "val")
    assert summary["curve"] and summary["selection"]["step"] <= summary["training"]["steps"]
    assert summary["model"]["layers"] == 1 and summary["data"]["format"] == recipe.data.format
    assert f"--seeds {recipe.seeds[0]} --smoke" in summary["command"]
    test_match = f"{100 * summary['evaluations']['test']['exact_match']:.2f}%"
    assert f"{recipe.label} test: seed {recipe.seeds[0]} {test_match} | mean {test_match} min {test_match}" in output


@pytest.mark.slow
def test_a_finished_recipe_run_is_found_again_and_the_report_is_built_from_its_summaries(smoke_runs, tmp_path):
    run_dir, _ = smoke_runs["fastest"]
    data_root, output_root = run_dir.parent.parent.parent / "data", run_dir.parent.parent
    results_dir = tmp_path / "results"
    result = run_script("run_recipe.py", "recipes/fastest.yaml", "--smoke", "--no-wandb", "--data-root", data_root,
                        "--output-root", output_root, "--results-dir", results_dir, home=tmp_path)
    assert "this run is already finished" in result.stdout + result.stderr
    first = json.loads((run_dir / "run_summary.json").read_text())
    assert not (results_dir / "fastest").exists()  # a smoke run is not recorded
    # the report reads recorded summaries: record two of the smoke runs as if they were real ones
    for name in ("fastest", "add10"):
        smoke_dir, _ = smoke_runs[name]
        summary = json.loads((smoke_dir / "run_summary.json").read_text())
        (results_dir / name).mkdir(parents=True)
        (results_dir / name / f"seed-{summary['seed']}.json").write_text(json.dumps(summary))
    readme = tmp_path / "README.md"
    readme.write_text("# title without the markers\n")
    with pytest.raises(DataError, match="no results table markers"):
        write_report(str(results_dir), [], str(tmp_path / "docs"), str(readme))
    assert not (tmp_path / "docs").exists()  # nothing written before the README was found unfit
    readme.write_text(f"# title\n\n{README_BEGIN}\nold table\n{README_END}\n\nrest\n")
    recipe_paths = [os.path.relpath(path, REPO_ROOT) for path in RECIPES]  # as report.py lists them
    written = write_report(str(results_dir), recipe_paths, str(tmp_path / "docs"), str(readme))
    text = readme.read_text()
    assert "old table" not in text and text.endswith("rest\n")
    assert "| [fastest](docs/results.md#fastest)" in text and "| [add10](docs/results.md#add10)" in text
    results_md = (tmp_path / "docs" / "results.md").read_text()
    assert f"{100 * first['evaluations']['test']['exact_match']:.2f}%" in results_md
    assert "python scripts/run_recipe.py recipes/default.yaml" in results_md  # listed as not run
    assert str(tmp_path / "docs" / "results_curves.png") in written
    assert list(load_summaries(str(results_dir))) == ["add10", "fastest"]


@pytest.fixture(scope="module")
def sweep_runs(tmp_path_factory):
    """SWEEP run by run_recipe.py: every variant over its seeds, then one variant and seed under an override of its
    learning rate. (recipe path, data root, output root, results dir, output of the first run)."""
    root = tmp_path_factory.mktemp("sweep")
    path = write_recipe(root, SWEEP, "sweep.yaml")
    roots = ["--data-root", root / "data", "--output-root", root / "runs", "--results-dir", root / "results"]
    every = run_script("run_recipe.py", path, "--no-wandb", *roots, home=root)
    run_script("run_recipe.py", path, "--variants", "w16", "--seeds", 3, "--learning-rate", 1e-2, "--no-wandb", *roots,
               home=root)
    return path, root / "data", root / "runs", root / "results", every.stdout + every.stderr


@pytest.mark.slow
def test_every_variant_runs_over_its_seeds_on_the_recipes_data_and_is_recorded_with_its_shape(sweep_runs):
    _, data_root, runs, results, output = sweep_runs
    recorded = {path.relative_to(results).as_posix(): json.loads(path.read_text())
                for path in results.rglob("*.json")}
    assert sorted(recorded) == ["sweep/w16/seed-1.json", "sweep/w8_r2/seed-1.json", "sweep/w8_r2/seed-2.json"]
    for name, summary in recorded.items():
        assert summary == json.loads((runs / name.removesuffix(".json") / "run_summary.json").read_text())
        assert summary["variant"] == name.split("/")[1] and summary["overrides"] == {}
        assert summary["data"]["data_dir"] == str(data_root / "sweep")
    assert sorted(path.name for path in data_root.iterdir()) == ["sweep"]
    model = recorded["sweep/w8_r2/seed-2.json"]["model"]
    assert (model["width"], model["head_dim"], model["rank"], model["norm"], model["tie_embeddings"]) == \
        (8, 4, 2, "layernorm", True)
    assert model["shape"].startswith("1 layer, width 8, 2 heads of 4") and model["shape"].endswith("rank 2")
    assert model["num_parameters"] < recorded["sweep/w16/seed-1.json"]["model"]["num_parameters"]
    assert "sweep w8_r2 test: seed 1 " in output and " seed 2 " in output.split("sweep w8_r2 test: ")[1].split("\n")[0]
    assert "sweep w16 long: seed 1 " in output


@pytest.mark.slow
def test_a_variant_runs_recorded_command_reruns_that_variant_and_seed_alone(sweep_runs):
    path, _, _, results, _ = sweep_runs
    command = json.loads((results / "sweep" / "w8_r2" / "seed-2.json").read_text())["command"]
    argv = shlex.split(command)
    assert argv[:2] == ["python", "scripts/run_recipe.py"]
    args = build_parser().parse_args(argv[2:])
    assert (args.recipe, args.variants, args.seeds, args.wandb) == (path, "w8_r2", "2", False)


@pytest.mark.slow
def test_variants_picks_the_variants_to_run_and_a_command_line_override_is_not_recorded(sweep_runs):
    _, _, runs, results, _ = sweep_runs
    summary = json.loads((runs / "sweep" / "w16" / "seed-3" / "run_summary.json").read_text())
    assert summary["variant"] == "w16" and summary["overrides"] == {"learning_rate": 0.01}
    assert not (results / "sweep" / "w16" / "seed-3.json").exists()
    assert not (runs / "sweep" / "w8_r2" / "seed-3").exists()
