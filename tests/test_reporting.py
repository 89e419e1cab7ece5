"""What evaluation and data generation show a reader: a progress bar on a terminal only, edge-case mistakes named
as such, plots by length with whole-number ticks, and plot_lengths.py reading the results train.py writes."""

import io
import json
import logging
import re
import sys
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
from math_llm.plots import save_length_plot
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
