"""scripts/benchmark.py runs end to end and writes what docs/speed.md's tables are built from (speed itself is
measured by running it, never asserted in a test)."""

import json

import pytest

from tests.helpers import run_script

pytestmark = pytest.mark.slow


def test_benchmark_writes_every_measured_row_and_the_target_checks(tmp_path):
    output_file = tmp_path / "benchmark.json"
    result = run_script("benchmark.py", "--parts", "training,data,padding", "--sizes", "tiny", "--precisions",
                        "fp32,bf16", "--batch-sizes", "8,16", "--steps", 2, "--rounds", 2, "--warmup", 1,
                        "--generation-examples", 3000, "--padding-examples", 1000, "--matmul-size", 512,
                        "--device", "cpu", "--output-file", output_file, home=tmp_path)
    results = json.loads(output_file.read_text())
    assert set(results["matmul_peak_flops"]) == {"fp32", "bf16"}
    rows = results["training"]
    assert [(row["precision"], row["batch_size"]) for row in rows] == [("fp32", 8), ("fp32", 16), ("bf16", 8),
                                                                        ("bf16", 16)]
    for row in rows:
        assert row["timed_steps"] == 4 and row["tokens_per_second"] > 0 and 0 < row["mfu"] < 1
        assert 0 < row["data_loading_share"] < 1
    assert results["data_generation"]["num_examples"] == 3000
    assert any("generating 3,000 problems" in check["target"] for check in results["targets"])
    padding = results["padding"]  # the same data either way: grouping computes fewer padding tokens
    shuffled, grouped = padding["shuffled"], padding["grouped by length"]
    assert shuffled["answer_and_prompt_tokens"] == grouped["answer_and_prompt_tokens"]
    assert grouped["answer_and_prompt_tokens"] <= grouped["tokens_per_epoch"] < shuffled["tokens_per_epoch"]
    assert shuffled["epoch_seconds"] > 0 and grouped["epoch_seconds"] > 0
    assert "results written to" in result.stderr


def test_benchmark_rejects_unknown_parts_in_one_line(tmp_path):
    result = run_script("benchmark.py", "--parts", "training,magic", home=tmp_path, check=False)
    assert result.returncode == 1 and "--parts: unknown magic" in result.stderr


def test_benchmark_measures_evaluation_memory_by_length_capped_and_not(tmp_path):
    output_file = tmp_path / "benchmark.json"
    run_script("benchmark.py", "--parts", "long-evaluation", "--long-lengths", "5,40", "--long-uncapped-up-to", 5,
               "--long-problems", 16, "--eval-batch-size", 8, "--device", "cpu", "--output-file", output_file,
               home=tmp_path)
    rows = json.loads(output_file.read_text())["long_evaluation"]
    assert [(row["digits"], row["capped"]) for row in rows] == [(5, True), (5, False), (40, True)]
    assert [row["tokens"] for row in rows] == [5 + 1 + 5 + 1 + 6 + 1] * 2 + [40 + 1 + 40 + 1 + 41 + 1]
    for row in rows:
        assert row["rows_per_batch"] == 8 and row["peak_mb"] >= 0 and row["seconds"] > 0
        assert 0 <= row["exact_match"] <= 1


def test_benchmark_times_a_speedrun_against_its_baseline_seed_by_seed(tmp_path):
    output_file, runs_dir = tmp_path / "benchmark.json", tmp_path / "runs"
    result = run_script("benchmark.py", "--parts", "time-to-accuracy,evaluation", "--speedruns", "add2", "--seeds", 42,
                        "--data-root", tmp_path / "data", "--runs-dir", runs_dir, "--device", "cpu", "--output-file",
                        output_file, home=tmp_path)
    results = json.loads(output_file.read_text())
    [row] = results["time_to_accuracy"]
    assert [(run["recipe"], run["seed"]) for run in row["runs"]] == [("fastest", 42), ("speedrun_add2", 42)]
    for run in row["runs"]:  # both learn 2-digit addition, stop at 99.5% val and hold 99% on the test split
        run_dir = runs_dir / run["recipe"] / "seed-42"
        state = json.loads((run_dir / "trainer_state.json").read_text())
        assert state["reached_at"] == {"step": run["step"], "training_seconds": run["seconds"]}
        assert state["stop_at_exact_match"] == 0.995 and state["step"] == run["step"] < state["total_steps"]
        assert run["met"] and run["exact_match"]["test"] >= 0.99
        # the baseline evaluates as often as the speedrun (25 steps), so both are timed as finely
        assert json.loads((run_dir / "training_config.json").read_text())["train_config"]["eval_steps"] == 25
    assert row["medians"] == {run["recipe"]: run["seconds"] for run in row["runs"]}
    assert row["ratio"] == pytest.approx(row["medians"]["fastest"] / row["medians"]["speedrun_add2"])
    assert results["evaluation"]["identical"] and results["evaluation"]["num_problems"] == 10_000
    assert any(check["target"].startswith("add2: speedrun_add2 reaches 99.0%") for check in results["targets"])
    assert "| `speedrun_add2` |" in result.stderr  # the table of docs/speed.md


def test_benchmark_refuses_to_time_runs_into_a_runs_dir_that_holds_runs(tmp_path):
    (tmp_path / "runs" / "fastest").mkdir(parents=True)
    result = run_script("benchmark.py", "--parts", "time-to-accuracy", "--runs-dir", tmp_path / "runs", home=tmp_path,
                        check=False)
    assert result.returncode == 1 and "--runs-dir" in result.stderr and "not empty" in result.stderr
    assert list((tmp_path / "runs").iterdir()) == [tmp_path / "runs" / "fastest"]
