"""What evaluation and data generation show a reader: a progress bar on a terminal only, edge-case mistakes named
as such, plots by length with whole-number ticks, plot_lengths.py reading the results train.py writes, and the report
of a recipe's variants: one row per variant in the recipe's order, the scaling plot, README's row."""

import io
import json
import logging
import re
import sys
import textwrap
from dataclasses import asdict

import pytest
import torch

from math_llm import decoding
from math_llm.data import ArithmeticDataset
from math_llm.data_generation import DataConfig, generate_splits
from math_llm.edge_cases import edge_case_datasets
from math_llm.errors import DataError
from math_llm.evaluation import evaluate, log_report
from math_llm.formats import FORMATS
from math_llm.model import ModelConfig, Transformer
from math_llm.plots import save_length_plot, save_scaling_plot
from math_llm.results import (README_BEGIN, README_END, TARGET, load_summaries, recipe_section, scaling_points,
                               write_report)
from math_llm.runtime import select_precision
from math_llm.tokenizer import Tokenizer
from math_llm.trained_model import TrainedModel
from scripts.plot_lengths import read_results
from tests.helpers import run_script

CPU = torch.device("cpu")
DATA_CONFIG = DataConfig(num_examples=150, max_digits=2, seed=3)


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as stderr is in a shell."""

    def isatty(self):
        return True


@pytest.fixture(scope="module")
def untrained():
    """An untrained tiny model (it gets nearly everything wrong) and a dataset it reads."""
    torch.manual_seed(0)
    tokenizer = Tokenizer()
    model = Transformer(ModelConfig("tiny", vocab_size=len(tokenizer), max_length=32)).eval()
    trained = TrainedModel(model, tokenizer, FORMATS["plain"], None, asdict(DATA_CONFIG))
    examples = generate_splits(DATA_CONFIG)["train"]
    return trained, ArithmeticDataset(examples, tokenizer, source="data/val.json")


def answers_with_stderr(monkeypatch, stream, trained, dataset):
    monkeypatch.setattr(sys, "stderr", stream)
    return decoding.dataset_answers(trained.model, dataset, trained.tokenizer, 16, CPU, select_precision(CPU))


def test_evaluation_progress_bar_counts_problems_by_batch_on_rank_0_and_a_terminal_only(untrained, monkeypatch):
    trained, dataset = untrained
    updates = []

    class RecordingBar(decoding.tqdm):
        def update(self, n=1):
            updates.append(n)
            return super().update(n)

    monkeypatch.setattr(decoding, "tqdm", RecordingBar)
    terminal = Terminal()
    answers = answers_with_stderr(monkeypatch, terminal, trained, dataset)
    assert "evaluating val.json" in terminal.getvalue() and f"/{len(dataset)} " in terminal.getvalue()
    assert sum(updates) == len(dataset) and len(updates) > 1  # one update per batch of up to 16 problems

    redirected = io.StringIO()  # not a terminal, as under `> log.txt 2>&1`
    assert answers_with_stderr(monkeypatch, redirected, trained, dataset) == answers
    assert redirected.getvalue() == ""

    monkeypatch.setenv("RANK", "1")  # rank 1 of a torchrun job
    other_rank = Terminal()
    answers_with_stderr(monkeypatch, other_rank, trained, dataset)
    assert other_rank.getvalue() == ""


def test_edge_case_mistakes_are_logged_as_edge_cases_with_their_kind(untrained, caplog):
    trained, dataset = untrained
    edge_sets = edge_case_datasets(dataset, trained.tokenizer, trained.model)
    results = evaluate(trained, dataset, edge_sets, 64, CPU, select_precision(CPU), num_mistakes=50)
    edge_mistakes = results["edge_cases"]["mistakes"]
    assert edge_mistakes and all(mistake["prompt"] + mistake["expected"] + "<end>" in edge_sets[mistake["kind"]]
                                 .examples for mistake in edge_mistakes)
    caplog.set_level(logging.INFO)
    log_report(results, logging.getLogger("test"), "test")
    first = edge_mistakes[0]
    assert (f"test edge case wrong ({first['kind']}): {first['prompt']}{first['predicted']}  "
            f"(expected {first['expected']})") in caplog.messages
    assert sum(message.startswith("test wrong: ") for message in caplog.messages) == len(results["mistakes"]) > 0
    assert sum(message.startswith("test edge case wrong (") for message in caplog.messages) == len(edge_mistakes)


def test_length_plot_ticks_whole_lengths(tmp_path):
    by_length = {str(n): {"exact_match": 1 / n, "count": 10} for n in range(1, 5)}  # the default: ticks at 0.5s
    figure = save_length_plot({"run": by_length}, tmp_path / "lengths.png", "test", trained_lengths=(1, 3))
    ticks = figure.axes[0].get_xticks()
    assert len(ticks) >= 4 and all(tick == int(tick) for tick in ticks)


@pytest.mark.parametrize("contents, message", [
    (7, "no exact_match_by_length inside"),
    ({"exact_match_by_length": {"3": {"exact_match": 0.5}}}, "exact_match_by_length must map each length to its "
                                                             "exact_match and count"),
    ({"exact_match_by_length": {"three": {"exact_match": 0.5, "count": 2}}}, "exact_match_by_length must map"),
])
def test_plot_lengths_refuses_results_without_what_it_plots_naming_the_file(contents, message, tmp_path):
    path = tmp_path / "eval_test.json"
    path.write_text(json.dumps(contents))
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: {message}"):
        read_results(str(path))


@pytest.mark.slow
def test_plot_lengths_reads_test_results_of_training_runs(untrained, tmp_path):
    """Results as train.py writes them (evaluate's, with best_model.pt as the checkpoint), and those of a run whose
    test_results.json names no checkpoint, position encoding or training lengths: labelled by their directory."""
    trained, dataset = untrained
    results = evaluate(trained, dataset, {}, 64, CPU, select_precision(CPU))
    current, older = tmp_path / "current", tmp_path / "older"
    current.mkdir(), older.mkdir()
    (current / "test_results.json").write_text(json.dumps(results | {"checkpoint": str(current / "best_model.pt"),
                                                                     "model_step": 400}))
    older_results = {key: value for key, value in results.items()
                     if key not in ("checkpoint", "pos_encoding", "trained_lengths")}
    (older / "test_results.json").write_text(json.dumps(older_results | {"model_file": "pytorch_model.bin"}))
    plotted = run_script("plot_lengths.py", current / "test_results.json", older / "test_results.json",
                         "--output", tmp_path / "lengths.png", home=tmp_path)
    rows = plotted.stdout.splitlines()
    assert rows[0] == "| run | 1-10 |" and rows[2].startswith("| learned (current) | ")
    assert rows[3].startswith("| learned (older) | ")
    assert (tmp_path / "lengths.png").stat().st_size > 5000


@pytest.mark.slow
def test_generate_data_shows_no_progress_bars_in_redirected_output(tmp_path):
    """200,000 problems are enough for a sampling bar on a terminal. (run_script reads the output as text, which
    turns a bar's carriage returns into newlines, so it is the bars' text that must be absent.)"""
    generated = run_script("generate_data.py", "--test-only", "--num-examples", 200_000, "--max-digits", 3,
                           "--output-dir", tmp_path / "data", home=tmp_path)
    assert "generated 200000 distinct problems" in generated.stderr
    output = generated.stdout + generated.stderr
    assert "sampling" not in output and "%|" not in output and "\r" not in output


SWEEP_RECIPE = """
    description: A sweep of shapes. Layers and widths.
    data: {max_digits: 2}
    evaluations: {uniform: {sampling: uniform, seed: 7}}
    train: {model_size: tiny}
    variants:
      l2_w16: {hidden_size: 16}
      l1_w8_r2: {num_layers: 1, hidden_size: 8, rank: 2, seeds: [1, 2]}
      l1_w4: {num_layers: 1, hidden_size: 4, seeds: [1, 2]}
      l1_w16: {num_layers: 1, hidden_size: 16}
"""
# (variant, seed, unique parameters, layers, rank, exact match on uniform), in no particular order
SWEEP_RUNS = [("l1_w16", 1, 1500, 1, None, 1.0), ("l1_w4", 1, 400, 1, None, 1.0), ("l1_w4", 2, 400, 1, None, 0.9),
              ("l1_w8_r2", 1, 900, 1, 2, 0.99), ("l1_w8_r2", 2, 900, 1, 2, 1.0), ("l2_w16", 1, 3000, 2, None, 1.0)]


def variant_summary(variant, seed, parameters, layers, rank, uniform):
    """What run_recipe.py records of a variant's run, the fields the report reads; l2_w16's as a summary written
    before the shape was recorded."""
    model = {"size": "tiny", "layers": layers, "width": 8, "heads": 2,
             "pos_encoding": "abacus" if variant == "l1_w16" else "learned",
             "num_parameters": parameters, "rank": rank, "shape": f"the shape of {variant}"}
    if variant == "l2_w16":
        del model["rank"], model["shape"]
    return {"recipe": "sweep", "variant": variant, "seed": seed, "description": "A sweep of shapes. Layers and widths.",
            "recipe_file": "recipes/sweep.yaml", "machine": "test machine", "overrides": {},
            "command": f"python scripts/run_recipe.py recipes/sweep.yaml --variants {variant} --seeds {seed}",
            "model": model, "data": {"format": "plain", "train_examples": 240},
            "training": {"steps": 8, "training_seconds": 2.0 * seed},
            "selection": {"set": "val", "step": 8, "exact_match": 1.0},
            "evaluations": {"test": {"exact_match": 1.0, "num_examples": 30, "in_training": 0},
                            "uniform": {"exact_match": uniform, "num_examples": 40, "in_training": 0}},
            "curve": [{"step": 8, "training_seconds": 2.0 * seed, "exact_match": 1.0}]}


def write_summary(path, summary):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary))


def test_a_recipe_with_variants_is_reported_one_row_per_variant_in_its_order_with_its_scaling_plot(tmp_path):
    recipe_file = tmp_path / "recipes" / "sweep.yaml"
    recipe_file.parent.mkdir()
    recipe_file.write_text(textwrap.dedent(SWEEP_RECIPE))
    for run in SWEEP_RUNS:
        write_summary(tmp_path / "results" / "sweep" / run[0] / f"seed-{run[1]}.json", variant_summary(*run))
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{README_BEGIN}\n{README_END}\n")
    written = write_report(str(tmp_path / "results"), [str(recipe_file)], str(tmp_path / "docs"), str(readme))
    assert str(tmp_path / "docs" / "sweep_scaling.png") in written
    results = (tmp_path / "docs" / "results.md").read_text()
    rows = [line for line in results.splitlines() if line.startswith("| `")]
    assert [row.split(" | ")[0] for row in rows] == ["| `l2_w16`", "| `l1_w8_r2`", "| `l1_w4`", "| `l1_w16`"]
    assert rows[0] == "| `l2_w16` | 2 layers, width 8, 2 heads | 3,000 | 1 | 100.00%, 1 seed | 100.00%, 1 seed | 2.0 |"
    assert rows[2] == ("| `l1_w4` | the shape of l1_w4 | 400 | 1, 2 | 100.00% (100.00%-100.00%), 2 seeds | "
                       "95.00% (90.00%-100.00%), 2 seeds | 3.0 |")
    assert rows[3].startswith("| `l1_w16` | the shape of l1_w16, abacus positions | 1,500 |")
    assert "![exact match against unique parameters, one point per seed](sweep_scaling.png)" in results
    assert "python scripts/run_recipe.py recipes/sweep.yaml --variants l1_w4 --seeds 1,2" in results
    # README: the smallest variant with every seed at 99% on uniform (l1_w4 is smaller, but one seed fell short)
    row = next(line for line in readme.read_text().splitlines() if line.startswith("| [sweep]"))
    assert "| `l1_w8_r2`, 900: the smallest of 4 variants with every seed at 99.00% on uniform | 240 | 3 s | " in row
    assert row.endswith("| uniform 99.50% (99.00%-100.00%) | 2 |")


def test_the_scaling_plot_puts_each_seed_against_parameters_by_layers_rank_and_position_encoding(tmp_path):
    summaries = [variant_summary(*run) for run in SWEEP_RUNS]
    figure = save_scaling_plot(scaling_points(summaries), tmp_path / "scaling.png", "sweep", TARGET)
    (axis,) = figure.axes  # one panel: uniform, the held-out test split left out
    assert axis.get_xscale() == "log" and axis.get_title() == "exact match on uniform"
    groups = {collection.get_label(): collection for collection in axis.collections}
    labels = ["1 layer, full rank, abacus positions", "1 layer, full rank, learned positions",
              "1 layer, low rank, learned positions", "2 layers, full rank, learned positions"]
    assert sorted(groups) == labels
    assert sum(len(collection.get_offsets()) for collection in groups.values()) == len(SWEEP_RUNS)
    assert sorted(map(tuple, groups[labels[2]].get_offsets())) == [(900, 99), (900, 100)]
    abacus, one, low, two = (groups[label] for label in labels)
    assert tuple(one.get_facecolor()[0]) != tuple(two.get_facecolor()[0])  # colour: layers
    assert one.get_paths()[0].vertices.tolist() != low.get_paths()[0].vertices.tolist()  # marker: rank
    assert len(abacus.get_facecolor()) == 0 and tuple(abacus.get_edgecolor()[0]) == tuple(one.get_facecolor()[0])
    (line,) = axis.get_lines()
    assert line.get_linestyle() == "--" and list(line.get_ydata()) == [99, 99]
    assert (tmp_path / "scaling.png").stat().st_size > 5000
    only_test = [{**summary, "evaluations": {"test": summary["evaluations"]["test"]}} for summary in summaries]
    assert list(scaling_points(only_test)) == ["test"]


def test_variant_summaries_are_found_by_recipe_variant_and_seed_and_a_run_found_twice_is_an_error(tmp_path):
    summaries = {run[:2]: variant_summary(*run) for run in SWEEP_RUNS}
    write_summary(tmp_path / "sweep" / "l1_w4" / "seed-1" / "run_summary.json", summaries["l1_w4", 1])
    write_summary(tmp_path / "sweep" / "l1_w16" / "seed-1" / "run_summary.json", summaries["l1_w16", 1])
    own_run = {**summaries["l1_w4", 1], "recipe": "fastest", "variant": None}
    write_summary(tmp_path / "fastest" / "seed-1" / "run_summary.json", own_run)
    write_summary(tmp_path / "smoke" / "fastest" / "seed-1" / "run_summary.json", own_run)  # a smoke run, not a variant
    runs = load_summaries(str(tmp_path))
    assert {name: [(s["variant"], s["seed"]) for s in found] for name, found in runs.items()} == \
        {"fastest": [(None, 1)], "sweep": [("l1_w16", 1), ("l1_w4", 1)]}
    write_summary(tmp_path / "sweep" / "l1_w4" / "seed-1.json", summaries["l1_w4", 1])
    with pytest.raises(DataError, match=r"recipe sweep variant l1_w4 seed 1 is also in .*l1_w4/seed-1"):
        load_summaries(str(tmp_path))


def test_a_length_generalisation_set_reports_its_worst_length_beside_its_total():
    summaries = []
    for seed, worst in ((1, 0.97), (2, 1.0)):
        summary = variant_summary("l2_w16", seed, 3000, 2, None, 1.0)
        del summary["variant"]
        by_length = {str(length): 1.0 for length in range(11, 31)}
        summary["evaluations"]["lengths_11_30"] = {"exact_match": 0.9985, "num_examples": 2000, "in_training": 0,
                                                   "by_length": {**by_length, "25": worst}}
        summary["evaluations"]["test"]["by_length"] = {"1": 0.5, "2": 1.0}  # a few lengths: no such row
        summaries.append(summary)
    lines = recipe_section(summaries)
    assert "| lengths_11_30 exact match at its worst length | 97.00% | 100.00% | 98.50% | 97.00% | 100.00% |" in lines
    assert not any(line.startswith("| test exact match at its worst length") for line in lines)
