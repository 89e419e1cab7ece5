"""A real model really learns: the main job's path (train.py on an empty data dir) with the tiny model, two
operations at once with a signed answer, and 3-digit addition from 500 problems with a scratchpad.

The first test's task is the default 2-digit addition, a superset of 1-digit addition: with only 100 distinct
1-digit problems, a held-out 1-digit test would ask a model to infer unseen facts from 80, which measures little.
"""

import json

import pytest

from tests.helpers import run_script

pytestmark = pytest.mark.slow


def test_tiny_model_learns_addition_to_90_percent_held_out(tmp_path):
    data_dir, output_dir = tmp_path / "data", tmp_path / "run"
    trained = run_script("train.py", "--model-size", "tiny", "--num-epochs", 30, "--learning-rate", 3e-3,
                         "--warmup-steps", 100, "--eval-steps", 2500, "--save-steps", 2500, "--logging-steps", 2500,
                         "--no-wandb", "--data-dir", data_dir, "--output-dir", output_dir, home=tmp_path)
    assert f"no dataset in {data_dir}/: generating the default one" in trained.stderr
    results = json.loads((output_dir / "test_results.json").read_text())
    assert results["num_examples"] == 1000  # held out: never seen in training
    assert results["exact_match"] >= 0.90  # 93.3% on an AVX2-only CPU, 95% or more with AVX-512

    evaluated = run_script("evaluate.py", "--checkpoint", output_dir, "--data-dir", data_dir, home=tmp_path)
    assert f"exact match {results['exact_match']:.4f}" in evaluated.stderr


def test_tiny_model_learns_addition_and_negative_subtraction_together(tmp_path):
    """Both operations in one dataset (the vocabulary grows by '-'), answers with a sign: >= 97% held out on each
    (99.9% in the runs behind this threshold, about 15 s of training)."""
    data_dir, output_dir = tmp_path / "data", tmp_path / "run"
    run_script("generate_data.py", "--num-examples", 20000, "--max-digits", 2, "--operations", "+,-", "--format",
               "padded-reversed-all", "--output-dir", data_dir, home=tmp_path)
    run_script("train.py", "--model-size", "tiny", "--max-length", 12, "--batch-size", 64, "--learning-rate", 3e-3,
               "--warmup-steps", 100, "--num-epochs", 12, "--eval-steps", 1000, "--save-steps", 5000, "--no-wandb",
               "--data-dir", data_dir, "--output-dir", output_dir, home=tmp_path)
    results = json.loads((output_dir / "test_results.json").read_text())
    by_operation = results["exact_match_by_operation"]
    assert by_operation["+"]["count"] + by_operation["-"]["count"] == 2000
    assert by_operation["+"]["exact_match"] >= 0.97 and by_operation["-"]["exact_match"] >= 0.97
    assert results["edge_cases"]["exact_match"] >= 0.9


def test_tiny_model_learns_3_digit_addition_from_500_problems_with_a_padded_pairwise_scratchpad(tmp_path):
    """The sample-efficiency recipe (recipes/add3_500_scratchpad.yaml) at a twelfth of its steps: 500 training
    problems, >= 97% of 1,000 held-out ones, every step of the scratchpad right as often. This run reaches 100% in
    45 s (98.6-99.7% with other data seeds and 800 steps); the plain `scratchpad` format, trained the same way,
    76.3%."""
    data_dir, output_dir = tmp_path / "data", tmp_path / "run"
    run_script("generate_data.py", "--num-examples", 1700, "--max-digits", 3, "--format",
               "padded-scratchpad-pairwise", "--val-fraction", 0.1176, "--test-fraction", 0.5883,
               "--output-dir", data_dir, home=tmp_path)
    run_script("train.py", "--model-size", "tiny", "--max-length", 56, "--batch-size", 64, "--learning-rate", 3e-3,
               "--warmup-steps", 100, "--num-epochs", 125, "--weight-decay", 0.1, "--dropout", 0.1,
               "--eval-steps", 1000, "--save-steps", 1000, "--no-wandb", "--data-dir", data_dir,
               "--output-dir", output_dir, home=tmp_path)
    results = json.loads((output_dir / "test_results.json").read_text())
    assert results["num_examples"] == 1000
    assert len(json.loads((data_dir / "train.json").read_text())["examples"]) == 500
    assert results["exact_match"] >= 0.97 and results["scratchpad"]["steps_exact_match"] >= 0.97
