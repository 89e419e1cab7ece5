"""Recipes: every file in recipes/ loads and smoke-runs end to end; a bad recipe is a one-line error naming the file
and the key; the command line overrides a recipe's training section; stale data is refused; the report is built
from the runs' summaries."""

import glob
import json
import os
import textwrap

import pytest

from math_llm.data import write_splits
from math_llm.data_generation import DataConfig, generate_splits
from math_llm.errors import ConfigError, DataError
from math_llm.recipes import SMOKE_TRAIN, check_set_seeds, load_recipe, parse_seeds, prepare_data, smoke
from math_llm.flags import config_from_flags, parse_config
from math_llm.results import README_BEGIN, README_END, load_summaries, write_report
from math_llm.trainer import TrainConfig
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
        recipe = load_recipe(path)
        runs[name] = (root / "runs" / name / f"seed-{recipe.seeds[0]}", result.stdout + result.stderr)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_every_recipe_smoke_runs_end_to_end(smoke_runs, name):
    run_dir, output = smoke_runs[name]
    recipe = load_recipe(os.path.join(REPO_ROOT, "recipes", f"{name}.yaml"))
    summary = json.loads((run_dir / "run_summary.json").read_text())
    assert summary["recipe"] == name and summary["seed"] == recipe.seeds[0]
    assert set(summary["evaluations"]) == {"test", *(s.name for s in recipe.evaluations)}
    for set_name, entry in summary["evaluations"].items():
        assert 0 <= entry["exact_match"] <= 1 and entry["num_examples"] > 0
        assert os.path.exists(entry["file"]), set_name
    assert summary["selection"]["set"] == ("selection" if recipe.selection else "val")
    assert summary["curve"] and summary["selection"]["step"] <= summary["training"]["steps"]
    assert summary["model"]["layers"] == 1 and summary["data"]["format"] == recipe.data.format
    assert f"--seeds {recipe.seeds[0]} --smoke" in summary["command"]
    test_match = f"{100 * summary['evaluations']['test']['exact_match']:.2f}%"
    assert f"{name} test: seed {recipe.seeds[0]} {test_match} | mean {test_match} min {test_match}" in output


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
