"""The command-line front ends as a user runs them."""

import json
import shutil
import signal

import pytest
import torch

from math_llm.model import ModelConfig, Transformer
from tests.helpers import interrupt_training, run_script, train_args

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script", ["generate_data.py", "train.py", "evaluate.py", "interactive.py", "benchmark.py"])
def test_every_script_has_help(script, tmp_path):
    result = run_script(script, "--help", home=tmp_path)
    assert result.stdout.startswith("usage:")


def test_train_help_lists_every_seed_flag(tmp_path):
    help_text = run_script("train.py", "--help", home=tmp_path).stdout
    for flag, default in [("--model-size", "small"), ("--max-length", "32"), ("--batch-size", "32"),
                          ("--eval-batch-size", "64"), ("--learning-rate", "0.0001"), ("--weight-decay", "0.01"),
                          ("--num-epochs", "10"), ("--warmup-steps", "500"), ("--data-dir", "data"),
                          ("--output-dir", "checkpoints"), ("--num-workers", "4"), ("--save-steps", "1000"),
                          ("--eval-steps", "1000"), ("--logging-steps", "100"), ("--seed", "42")]:
        assert flag in help_text
        section = " ".join(help_text.split(f"\n  {flag}", 1)[1].split("\n  --", 1)[0].split())  # its entry
        assert f"(default: {default})" in section, flag
    assert "--fp16" in help_text and "--no-wandb" in help_text


def test_generate_data_writes_three_disjoint_splits(tmp_path):
    result = run_script("generate_data.py", "--num-examples", 300, "--max-digits", 3, "--output-dir",
                        tmp_path / "data", home=tmp_path)
    splits = {name: json.loads((tmp_path / "data" / f"{name}.json").read_text())["examples"]
              for name in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [240, 30, 30]
    assert not set(splits["train"]) & (set(splits["val"]) | set(splits["test"]))
    assert "by carries" in result.stderr


def test_evaluate_reports_the_same_test_metrics_as_training(tmp_path, data_dir, reference_run):
    output_file = tmp_path / "eval.json"
    result = run_script("evaluate.py", "--checkpoint", reference_run, "--data-dir", data_dir, "--output-file",
                        output_file, home=tmp_path)
    evaluated = json.loads(output_file.read_text())
    trained = json.loads((reference_run / "test_results.json").read_text())
    for key in ("exact_match", "token_accuracy", "num_examples"):
        assert evaluated[key] == trained[key]
    assert evaluated["loss"] == pytest.approx(trained["loss"])
    assert set(evaluated["exact_match_by_operand_digits"]) == {"1x1", "1x2", "2x1", "2x2"}
    assert "exact match" in result.stderr


def test_evaluate_refuses_data_in_another_format_than_the_model_learned(tmp_path, reference_run):
    run_script("generate_data.py", "--num-examples", 100, "--format", "padded-reversed", "--output-dir",
               tmp_path / "padded", home=tmp_path)
    result = run_script("evaluate.py", "--checkpoint", reference_run, "--data-dir", tmp_path / "padded",
                        home=tmp_path, check=False)
    assert result.returncode == 1
    assert "test.json: its problems are in the 'padded-reversed' format" in result.stderr
    assert "trained on 'plain'" in result.stderr


def test_training_records_time_and_metrics_in_trainer_state(reference_run):
    state = json.loads((reference_run / "trainer_state.json").read_text())
    assert state["step"] == state["total_steps"] == 400
    evaluations = [entry for entry in state["log_history"] if "val/exact_match" in entry]
    assert [entry["step"] for entry in evaluations] == [100, 200, 300, 400]
    seconds = [entry["train/training_seconds"] for entry in evaluations]
    assert 0 < seconds[0] < seconds[1] < seconds[2] < seconds[3] == pytest.approx(state["training_seconds"])
    assert state["evaluation_seconds"] == pytest.approx(sum(entry["val/seconds"] for entry in evaluations))


def test_bf16_flag_trains_with_bf16_autocast_and_scores_test_in_fp32(data_dir, tmp_path):
    result = run_script("train.py", *train_args(data_dir, tmp_path / "run", "--bf16", "--num-epochs", 1,
                                                "--device", "cpu"), home=tmp_path)
    assert "precision bf16 autocast (CPU)" in result.stderr
    trained = json.loads((tmp_path / "run" / "test_results.json").read_text())
    assert trained["num_examples"] == 200
    # the test split is scored in fp32, as evaluate.py scores it by default (bf16 would round the loss differently)
    run_script("evaluate.py", "--checkpoint", tmp_path / "run", "--data-dir", data_dir, "--output-file",
               tmp_path / "eval.json", home=tmp_path)
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["exact_match"] == trained["exact_match"]
    assert evaluated["loss"] == pytest.approx(trained["loss"], rel=1e-6)
    assert trained["precision"] == evaluated["precision"] == "fp32"


def test_evaluate_reports_a_missing_checkpoint_in_one_line(tmp_path):
    result = run_script("evaluate.py", "--checkpoint", tmp_path / "missing.pt", home=tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "missing.pt: checkpoint not found" in result.stderr


def test_wandb_runs_offline_without_login_and_resume_continues_the_same_run(data_dir, tmp_path):
    output_dir = tmp_path / "run"
    flags = [arg for arg in train_args(data_dir, output_dir) if arg != "--no-wandb"]
    _, output = interrupt_training(data_dir, output_dir, tmp_path, after_checkpoint=90, sig=signal.SIGINT,
                                   flags=flags)
    assert "W&B is offline (no login found)" in output and "wandb sync" in output
    stopped_at = int(output.split("stopped at step ")[1].split("/")[0])
    first_loss = json.loads((output_dir / "trainer_state.json").read_text())["log_history"][0]["train/loss"]
    resumed = run_script("train.py", *flags, home=tmp_path)
    assert "resuming" in resumed.stderr and "replaces 1 earlier one(s)" in resumed.stderr
    run_id = (output_dir / "wandb_run_id").read_text().strip()
    run_dirs = list((output_dir / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1 and run_dirs[0].name.endswith(run_id)  # one folder holds the whole run
    history = [json.loads(line) for line in (output_dir / "wandb_history.jsonl").read_text().splitlines()]
    steps = [entry["step"] for entry in history if "train/loss" in entry["metrics"]]
    assert steps == list(range(50, 401, 50)) and stopped_at < 400
    # the first part's metrics were replayed into the folder of the second
    assert json.dumps(first_loss).encode() in (run_dirs[0] / f"run-{run_id}.wandb").read_bytes()


def test_evaluate_takes_a_hand_written_json_list(tmp_path, reference_run):
    data_path = tmp_path / "mine.json"
    data_path.write_text('["1+1=2<end>", "10+5=15<end>", "99+99=198<end>"]')
    run_script("evaluate.py", "--checkpoint", reference_run / "best_model.pt", "--data-path", data_path,
               "--output-file", tmp_path / "out.json", home=tmp_path)
    results = json.loads((tmp_path / "out.json").read_text())
    assert results["num_examples"] == 3 and results["data_path"] == str(data_path)
    assert set(results["exact_match_by_operand_digits"]) == {"1x1", "2x1", "2x2"}


def test_evaluate_reports_bad_data_in_one_line(tmp_path, reference_run):
    data_path = tmp_path / "bad.json"
    data_path.write_text('["1+1=2<end>",\n"2-1=1<end>"]')
    result = run_script("evaluate.py", "--checkpoint", reference_run, "--data-path", data_path, home=tmp_path,
                        check=False)
    assert result.returncode == 1
    assert f"{data_path} line 2: unknown character '-' at position 1" in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


@pytest.mark.parametrize("script, flags, message", [
    ("train.py", ["--batch-size", 0], "--batch-size must be at least 1, got 0"),
    ("train.py", ["--keep-checkpoints", 0, "--batch-size", 0], "--batch-size must be at least 1, got 0; "
                                                                "--keep-checkpoints must be at least 1, got 0"),
    ("train.py", ["--num-heads", 3, "--dropout", 1.5], "--hidden-size 256 is not divisible by --num-heads 3 (or "
                                                       "give --head-dim); --dropout must be in [0, 1), got 1.5"),
    ("train.py", ["--fp16", "--bf16"], "--fp16 and --bf16 exclude each other: choose one"),
    ("train.py", ["--device", "cuda"] if not torch.cuda.is_available() else ["--num-epochs", 0],
     "no CUDA device is available" if not torch.cuda.is_available() else "--num-epochs must be at least 1"),
    ("train.py", ["--no-place-bias"], "--no-place-bias applies to --pos-encoding abacus only"),
    ("train.py", ["--running-sum-loss", -1], "--running-sum-loss must be a number >= 0, got -1.0"),
    ("generate_data.py", ["--val-fraction", 1.5], "--val-fraction and --test-fraction must be in (0, 1)"),
    ("generate_data.py", ["--max-digits", 1001], "--max-digits must be between 1 and 1000, got 1001"),
    ("generate_data.py", ["--operations", "sub,mul", "--operation-weights", "1"],
     "--operation-weights must be 2 positive numbers, one per operation of --operations -,*, got '1'"),
    ("generate_data.py", ["--min-digits", 3, "--max-digits", 2], "--min-digits must be between 1 and --max-digits (2), got 3"),
    ("evaluate.py", ["--batch-size", 0], "--batch-size must be at least 1"),
    ("evaluate.py", ["--fp16", "--bf16"], "--fp16 and --bf16 exclude each other: choose one"),
    ("generate_data.py", ["--operations", "+,/", "--format", "scratchpad"],
     "the 'scratchpad' format writes scratchpad steps, and div (/) has none; choose a format without a scratchpad"),
    ("generate_data.py", ["--operations", "div", "--max-operands", 3],
     "div (/) takes at most 2 operands; use --max-operands 2"),
])
def test_bad_flags_are_one_line_errors(script, flags, message, tmp_path):
    places = {"train.py": ["--data-dir", tmp_path / "data", "--output-dir", tmp_path / "run"],
              "generate_data.py": ["--output-dir", tmp_path / "data"],
              "evaluate.py": ["--data-dir", tmp_path / "data", "--output-file", tmp_path / "out.json"]}
    result = run_script(script, *flags, *places[script], home=tmp_path, check=False)
    assert result.returncode == 1
    assert message in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr


def test_mixed_operations_with_a_scratchpad_end_to_end(tmp_path):
    """generate_data -> train (W&B offline) -> evaluate on + and - in the scratchpad format: the vocabulary grows
    with the data, and every breakdown, the heatmaps and the W&B metrics come out."""
    data_dir, output_dir = tmp_path / "data", tmp_path / "run"
    run_script("generate_data.py", "--num-examples", 400, "--operations", "+,-", "--format", "scratchpad",
               "--output-dir", data_dir, home=tmp_path)
    flags = [arg for arg in train_args(data_dir, output_dir, "--num-epochs", 1, "--max-length", 48)
             if arg != "--no-wandb"]
    trained = run_script("train.py", *flags, home=tmp_path)
    assert "test edge cases: exact match" in trained.stderr and "test scratchpad: all steps right" in trained.stderr
    config = json.loads((output_dir / "training_config.json").read_text())
    assert config["vocab"][13:] == ["-", " ", "<think>", "</think>"]
    assert config["data_config"]["operations"] == "+,-" and config["data_format"] == "scratchpad"
    results = json.loads((output_dir / "test_results.json").read_text())
    assert set(results["exact_match_by_operation"]) == {"+", "-"}
    assert {"steps_exact_match", "step_accuracy"} <= set(results["scratchpad"])
    assert "all nines" in results["edge_cases"]["by_kind"]
    assert (output_dir / "test_heatmap.png").read_bytes()[:4] == b"\x89PNG"
    run_log = next((output_dir / "wandb").glob("offline-run-*/run-*.wandb")).read_bytes()
    assert b"val/exact_match/-" in run_log and b"val/edge_cases/all nines" in run_log

    evaluated = run_script("evaluate.py", "--checkpoint", output_dir, "--data-dir", data_dir, home=tmp_path)
    assert "results written to" in evaluated.stderr and "eval_test_heatmap.png" in evaluated.stderr
    results = json.loads((output_dir / "eval_test.json").read_text())
    assert set(results["exact_match_by_operation_and_operand_digits"]["-"]) == {"1x1", "1x2", "2x1", "2x2"}
    assert (output_dir / "eval_test_heatmap.png").stat().st_size > 5000


def test_division_with_remainder_end_to_end(tmp_path):
    """Division, an operation that is one registry entry: generated beside addition in a padded format with no
    zero divisor, trained on, and evaluated with its own cells, signs left out and edge cases of its own."""
    data_dir, output_dir = tmp_path / "data", tmp_path / "run"
    run_script("generate_data.py", "--num-examples", 1000, "--operations", "+,div", "--format", "padded-reversed",
               "--output-dir", data_dir, home=tmp_path)
    examples = [text for split in ("train", "val", "test")
                for text in json.loads((data_dir / f"{split}.json").read_text())["examples"]]
    quotients = [text for text in examples if "/" in text]
    assert len(quotients) == 500 and all("r" in text for text in quotients)
    assert all(int(text.partition("=")[0].partition("/")[2]) > 0 for text in quotients)  # no zero divisor
    run_script("train.py", *train_args(data_dir, output_dir, "--num-epochs", 1, "--max-length", 16), home=tmp_path)
    assert json.loads((output_dir / "training_config.json").read_text())["vocab"][13:] == ["/", "r"]
    run_script("evaluate.py", "--checkpoint", output_dir, "--data-dir", data_dir, home=tmp_path)
    results = json.loads((output_dir / "eval_test.json").read_text())
    assert set(results["exact_match_by_operation"]) == {"+", "/"} and results["num_examples"] == 100
    assert set(results["exact_match_by_carries"]) == {"+"} and results["sign_accuracy_by_operation"] == {}
    assert set(results["digit_accuracy_by_place"]["/"]) == {"0", "1"}  # the quotient's places, padded to 2
    assert {"all nines", "zero result", "zero operand"} <= set(results["edge_cases"]["by_kind"])


def test_length_generalisation_end_to_end(tmp_path):
    """Train on 1-3 digit numbers with digit-place positions, evaluate on a test-only file of 4-8 digits: a table
    and JSON by length, a plot with the training lengths marked, and a learned-position model refusing lengths it
    has no positions for in one line."""
    train_dir, long_dir, output_dir = tmp_path / "data", tmp_path / "long", tmp_path / "run"
    run_script("generate_data.py", "--num-examples", 2000, "--max-digits", 3, "--format", "reversed-all",
               "--output-dir", train_dir, home=tmp_path)
    run_script("generate_data.py", "--test-only", "--num-examples", 100, "--min-digits", 4, "--max-digits", 8,
               "--sampling", "same-length", "--format", "reversed-all", "--output-dir", long_dir, home=tmp_path)
    assert sorted(path.name for path in long_dir.iterdir()) == ["test.json"]
    beside = run_script("generate_data.py", "--test-only", "--output-dir", train_dir, home=tmp_path, check=False)
    assert beside.returncode == 1 and "--test-only: " in beside.stderr and "train.json" in beside.stderr
    run_script("train.py", *train_args(train_dir, output_dir, "--num-epochs", 1, "--max-length", 13,
                                       "--pos-encoding", "abacus", "--digit-positions", 16, "--group-by-length"),
               home=tmp_path)
    assert json.loads((output_dir / "training_config.json").read_text())["train_config"]["model"]["pos_encoding"] \
        == "abacus"

    evaluated = run_script("evaluate.py", "--checkpoint", output_dir, "--data-dir", long_dir, home=tmp_path)
    assert "exact match (%) by length 4:" in evaluated.stderr and " 8:" in evaluated.stderr
    results = json.loads((output_dir / "eval_long_test.json").read_text())  # not the run's own split
    assert list(results["exact_match_by_length"]) == ["4", "5", "6", "7", "8"]
    assert all(cell["count"] == 20 for cell in results["exact_match_by_length"].values())
    assert results["trained_lengths"] == [1, 3] and results["pos_encoding"] == "abacus"
    assert (output_dir / "eval_long_test_by_length.png").stat().st_size > 5000

    compared = run_script("plot_lengths.py", output_dir / "eval_long_test.json", "--output", tmp_path / "lengths.png",
                          "--band", 5, home=tmp_path)
    assert compared.stdout.splitlines()[:2] == ["| run | 1-5 | 6-10 |", "|---|---:|---:|"]
    assert (tmp_path / "lengths.png").stat().st_size > 5000

    too_long = tmp_path / "too_long"
    run_script("generate_data.py", "--test-only", "--num-examples", 10, "--min-digits", 15, "--max-digits", 15,
               "--format", "reversed-all", "--output-dir", too_long, home=tmp_path)
    refused = run_script("evaluate.py", "--checkpoint", output_dir, "--data-dir", too_long, home=tmp_path, check=False)
    assert refused.returncode == 1 and refused.stderr.strip().count("\n") == 0
    assert "test.json line 3: " in refused.stderr  # the first example; line 1 holds the metadata
    assert "a number that reaches digit place 17, beyond the model's 15 (train.py --digit-positions)" in refused.stderr

    learned_dir = tmp_path / "learned"
    run_script("train.py", *train_args(train_dir, learned_dir, "--num-epochs", 1, "--max-length", 13), home=tmp_path)
    refused = run_script("evaluate.py", "--checkpoint", learned_dir, "--data-dir", long_dir, home=tmp_path,
                         check=False)
    assert refused.returncode == 1 and refused.stderr.strip().count("\n") == 0
    assert "more than the max_length of 13 (train.py --max-length)" in refused.stderr


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.safetensors"])
def test_evaluate_reads_a_runs_final_weights(weights, tmp_path, reference_run):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    result = run_script("evaluate.py", "--checkpoint", run / weights, "--output-file", tmp_path / "final.json",
                        home=tmp_path)
    final = json.loads((tmp_path / "final.json").read_text())
    assert final["checkpoint"] == str(run / weights) and "step 400" in result.stderr
    # the final weights are those of step 400: evaluating its checkpoint gives the same numbers
    run_script("evaluate.py", "--checkpoint", run / "checkpoint-400.pt", "--output-file", tmp_path / "last.json",
               home=tmp_path)
    last = json.loads((tmp_path / "last.json").read_text())
    assert final["exact_match"] == last["exact_match"] and final["loss"] == pytest.approx(last["loss"])


def test_model_safetensors_stands_alone_and_cannot_run_code(tmp_path, reference_run, data_dir):
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(reference_run / "model.safetensors", alone)  # without the run's config beside it
    run_script("evaluate.py", "--checkpoint", alone / "model.safetensors", "--data-dir", data_dir, home=tmp_path)
    assert json.loads((alone / "eval_test_model.json").read_text())["num_examples"] == 200
    # the safetensors layout, which has no place for code: a header length, a JSON header, then raw tensor bytes
    content = (alone / "model.safetensors").read_bytes()
    header = json.loads(content[8:8 + int.from_bytes(content[:8], "little")])
    assert json.loads(header.pop("__metadata__")["data_format"]) == "plain"
    assert header and all(entry.keys() == {"dtype", "shape", "data_offsets"} for entry in header.values())


def test_evaluate_scores_the_runs_own_test_split_and_keeps_each_files_results(tmp_path, reference_run, data_dir):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    # from a directory without data/: the run's own split (it was trained on --data-dir elsewhere)
    run_script("evaluate.py", "--checkpoint", run, home=tmp_path, cwd=tmp_path)
    own = json.loads((run / "eval_test.json").read_text())
    assert own["data_path"] == str(data_dir / "test.json")
    assert own["exact_match"] == json.loads((run / "test_results.json").read_text())["exact_match"]
    for directory in ("long", "other/long"):
        run_script("generate_data.py", "--test-only", "--num-examples", 50, "--max-digits", 2, "--seed", 5,
                   "--output-dir", tmp_path / directory, home=tmp_path)
        run_script("evaluate.py", "--checkpoint", run, "--data-path", tmp_path / directory / "test.json",
                   home=tmp_path)
    written = sorted(path.name for path in run.glob("eval_*.json"))
    assert len(written) == 3 and {"eval_long_test.json", "eval_test.json"} < set(written)
    assert any(name.startswith("eval_long_test_") for name in written)  # the second long/test.json has its own
    paths = {json.loads((run / name).read_text())["data_path"] for name in written}
    assert paths == {str(data_dir / "test.json"), str(tmp_path / "long/test.json"),
                     str(tmp_path / "other/long/test.json")}


def test_a_model_of_any_shape_trains_evaluates_and_records_its_unique_parameters(tmp_path, data_dir):
    output_dir = tmp_path / "shaped"
    shape = ["--num-layers", 1, "--hidden-size", 16, "--num-heads", 2, "--head-dim", 4, "--norm", "rmsnorm", "--mlp",
             "swiglu", "--no-bias", "--no-tie-embeddings", "--rank", 4]
    trained = run_script("train.py", *train_args(data_dir, output_dir, *shape, "--num-epochs", 1), home=tmp_path)
    layout = json.loads((output_dir / "training_config.json").read_text())
    model = layout["train_config"]["model"]
    assert (model["head_dim"], model["norm"], model["mlp"], model["bias"], model["tie_embeddings"], model["rank"]) == \
        (4, "rmsnorm", "swiglu", False, False, 4)
    rebuilt = Transformer(ModelConfig(**{**model, "digit_ids": tuple(model["digit_ids"])}))
    assert layout["num_parameters"] == rebuilt.num_parameters() == sum(p.numel() for p in rebuilt.parameters())
    assert (f"(1 layer, width 16, 2 heads of 4, feed-forward 128 (swiglu), rmsnorm, no biases, untied head, rank 4): "
            f"{layout['num_parameters']:,} unique parameters") in trained.stderr
    run_script("evaluate.py", "--checkpoint", output_dir / "model.safetensors", "--output-file",
               tmp_path / "eval.json", home=tmp_path)
    assert json.loads((tmp_path / "eval.json").read_text())["num_examples"] == 200
