"""The training loop: its pure parts (learning rate, batch order, the split of a step over ranks and micro-steps,
the choice of the best model), and end to end through scripts/train.py as a user runs it: resume, interruption,
bad resumes, divergence, compilation, the running-sum probe."""

import json
import math
from dataclasses import asdict
import shutil
import signal

import pytest
import torch

from math_llm.checkpoint import TrainingState, load_model
from math_llm.data import ArithmeticDataset, write_splits
from math_llm.data_generation import DataConfig, generate_splits
from math_llm.distributed import Ranks
from math_llm.model import IGNORE_INDEX
from math_llm.probe import ProbedModel, add_running_sums
from math_llm.tokenizer import Tokenizer
from math_llm.batches import epoch_order, step_batches
from math_llm.trainer import TrainConfig, improves_on_best, learning_rate_at, resumed_run
from tests.helpers import final_weights, interrupt_training, run_script, train_args

slow = pytest.mark.slow



def assert_same_weights(first, second):
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), f"{name} differs"


def test_learning_rate_warms_up_then_decays_to_the_floor():
    config = TrainConfig(learning_rate=1e-3, warmup_steps=10, min_learning_rate_ratio=0.1)
    rates = [learning_rate_at(step, config, total_steps=100) for step in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(rates[:10], rates[1:10]))
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert learning_rate_at(100, config, 100) == pytest.approx(1e-4)


def test_epoch_order_is_a_reproducible_permutation_that_changes_each_epoch():
    first = epoch_order(100, seed=1, epoch=0)
    assert sorted(first.tolist()) == list(range(100))
    assert torch.equal(first, epoch_order(100, seed=1, epoch=0))
    assert not torch.equal(first, epoch_order(100, seed=1, epoch=1))


def test_the_best_model_is_the_top_val_exact_match_with_ties_going_to_the_lower_loss():
    best = TrainingState(best_exact_match=0.5, best_loss=0.2)
    assert improves_on_best({"exact_match": 0.6, "loss": 0.9}, best)
    assert improves_on_best({"exact_match": 0.5, "loss": 0.1}, best)
    assert not improves_on_best({"exact_match": 0.5, "loss": 0.3}, best)
    assert not improves_on_best({"exact_match": 0.4, "loss": 0.0}, best)
    assert improves_on_best({"exact_match": 0.0, "loss": 9.0}, TrainingState())  # the first evaluation


@slow
def test_run_writes_every_promised_output(reference_run):
    for name in ("pytorch_model.bin", "best_model.pt", "training_config.json", "test_results.json",
                 "logs/training.log", "checkpoint-400.pt"):
        assert (reference_run / name).exists(), name
    assert sorted(p.name for p in reference_run.glob("checkpoint-*.pt")) == [
        "checkpoint-360.pt", "checkpoint-390.pt", "checkpoint-400.pt"]  # the last three are kept
    results = json.loads((reference_run / "test_results.json").read_text())
    assert results["num_examples"] == 200 and 0.0 <= results["exact_match"] <= 1.0
    config = json.loads((reference_run / "training_config.json").read_text())
    assert config["train_config"]["model"]["model_size"] == "tiny" and config["total_steps"] == 400
    assert config["train_config"]["model"]["num_layers"] == 2 and config["train_config"]["model"]["vocab_size"] == 13
    assert "step 400/400" in (reference_run / "logs" / "training.log").read_text()


@slow
def test_the_run_keeps_as_best_model_its_top_val_evaluation(reference_run):
    history = json.loads((reference_run / "trainer_state.json").read_text())["log_history"]
    evaluations = [entry for entry in history if "val/exact_match" in entry]
    top = max(evaluations, key=lambda entry: (entry["val/exact_match"], -entry["val/loss"]))
    best_step = torch.load(reference_run / "best_model.pt", weights_only=True)["step"]
    assert len(evaluations) == 4 and best_step == top["step"]


@slow
def test_evaluations_tied_at_zero_keep_the_model_with_the_lowest_val_loss(tmp_path):
    data_dir, output_dir = tmp_path / "data", tmp_path / "run"
    config = DataConfig(num_examples=600, max_digits=2, operations="*", format="padded-reversed-all", seed=0)
    write_splits(str(data_dir), generate_splits(config), config)
    run_script("train.py", *train_args(data_dir, output_dir, "--num-epochs", 2, "--learning-rate", 1e-4,
                                       "--eval-steps", 10), home=tmp_path)
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    losses = {entry["step"]: entry["val/loss"] for entry in history if "val/exact_match" in entry}
    assert all(entry["val/exact_match"] == 0 for entry in history if "val/exact_match" in entry)
    lowest = min(losses, key=losses.get)
    assert lowest != min(losses)  # the first evaluation, which the old rule kept, is not the lowest
    assert torch.load(output_dir / "best_model.pt", weights_only=True)["step"] == lowest


@slow
def test_sigkill_then_resume_ends_with_the_same_weights(data_dir, reference_run, tmp_path):
    output_dir = tmp_path / "run"
    interrupt_training(data_dir, output_dir, tmp_path, after_checkpoint=120, sig=signal.SIGKILL)
    resumed = run_script("train.py", "--output-dir", output_dir, home=tmp_path)  # the README's resume command
    assert "resuming" in resumed.stderr
    assert "taking over the lock of a run that ended without releasing it (pid" in resumed.stderr
    assert_same_weights(final_weights(output_dir), final_weights(reference_run))


@slow
def test_corrupt_newest_checkpoint_is_reported_and_the_previous_one_used(data_dir, reference_run, tmp_path):
    output_dir = tmp_path / "run"
    interrupt_training(data_dir, output_dir, tmp_path, after_checkpoint=210, sig=signal.SIGKILL)
    newest = max(output_dir.glob("checkpoint-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    newest.write_bytes(newest.read_bytes()[:1000])
    resumed = run_script("train.py", *train_args(data_dir, output_dir), home=tmp_path)
    assert f"{newest}: unreadable checkpoint, truncated or corrupt" in resumed.stderr
    assert "trying the previous checkpoint" in resumed.stderr
    assert_same_weights(final_weights(output_dir), final_weights(reference_run))


@slow
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(data_dir, reference_run, tmp_path):
    output_dir = tmp_path / "run"
    returncode, output = interrupt_training(data_dir, output_dir, tmp_path, after_checkpoint=90, sig=signal.SIGINT)
    assert returncode == 0, output
    assert "run the same command to resume" in output
    stopped_at = int(output.split("stopped at step ")[1].split("/")[0])
    assert (output_dir / f"checkpoint-{stopped_at}.pt").exists()
    run_script("train.py", *train_args(data_dir, output_dir), home=tmp_path)
    assert_same_weights(final_weights(output_dir), final_weights(reference_run))


@slow
def test_resume_with_a_different_setting_is_a_clear_error(reference_run, data_dir, tmp_path):
    output_dir = tmp_path / "copy"
    shutil.copytree(reference_run, output_dir)
    result = run_script("train.py", *train_args(data_dir, output_dir, "--model-size", "small"), home=tmp_path,
                        check=False)
    assert result.returncode == 1
    assert "cannot resume with different settings: --model-size 'small' (run has 'tiny')" in result.stderr
    assert "Traceback" not in result.stderr


@slow
def test_resume_takes_the_saved_settings_when_no_flags_are_given(reference_run, tmp_path):
    output_dir = tmp_path / "copy"
    shutil.copytree(reference_run, output_dir)
    result = run_script("train.py", "--output-dir", output_dir, home=tmp_path)  # as the README's resume command
    assert "this run is already finished (400 steps)" in result.stderr


@slow
@pytest.mark.parametrize("check_point", [["--logging-steps", 5], ["--eval-steps", 5], ["--save-steps", 5]])
def test_nan_loss_stops_with_a_message_before_anything_is_saved(data_dir, tmp_path, check_point):
    result = run_script("train.py", *train_args(data_dir, tmp_path / "run", "--learning-rate", 1e30, *check_point),
                        home=tmp_path, check=False)
    assert result.returncode == 1
    assert "loss became nan" in result.stderr.lower() and "Traceback" not in result.stderr
    assert not list((tmp_path / "run").glob("*.pt")) and not (tmp_path / "run" / "pytorch_model.bin").exists()


def test_a_resume_with_another_total_keeps_the_warmup_of_the_run():
    config = TrainConfig(learning_rate=1e-3, warmup_steps=500, min_learning_rate_ratio=0.1)
    # 250 steps cap the warmup at 125; resumed at step 150 with a total of 950 (another global batch), the run
    # keeps decaying from near the peak instead of warming up again from a third of it.
    assert learning_rate_at(150, config, 250) > 0.9e-3
    assert learning_rate_at(150, config, 950, warmup=125) > 0.99e-3
    assert learning_rate_at(150, config, 950) < 0.35e-3  # what recomputing the cap would do


def test_step_batches_cover_every_example_once_from_the_resume_point():
    dataset = ArithmeticDataset(generate_splits(DataConfig(num_examples=130, seed=4))["train"], Tokenizer())
    order = epoch_order(len(dataset), seed=0, epoch=0)
    assert sorted(order.tolist()) == list(range(len(dataset)))
    steps = list(step_batches(dataset, order, batch_size=10))
    assert len(steps) == math.ceil(len(dataset) / 10)
    for index, (micro_batches, num_examples) in enumerate(steps):
        [(inputs, targets, extra, weight)] = micro_batches
        rows = order[index * 10:(index + 1) * 10]
        longest = int(dataset.lengths[rows].max())  # padded only to the longest of its own batch
        assert torch.equal(inputs, dataset.tokens[rows, :longest - 1])
        assert torch.equal(targets, dataset.targets[rows, 1:longest])
        assert extra == {} and weight == 1.0 and num_examples == len(rows)
    resumed = list(step_batches(dataset, order, batch_size=10, first_example=40))
    assert len(resumed) == len(steps) - 4
    assert all(torch.equal(a[0][0][0], b[0][0][0]) for a, b in zip(resumed, steps[4:]))


def test_ranks_and_micro_steps_split_each_global_batch_and_weigh_it_by_answer_tokens():
    dataset = ArithmeticDataset(generate_splits(DataConfig(num_examples=130, seed=4))["train"], Tokenizer())
    order = epoch_order(len(dataset), seed=0, epoch=0)  # 104 examples: 6 steps of 16, then 8
    answer_tokens = dataset.lengths - dataset.prompt_lengths
    seen, weights = [], []
    for rank in (0, 1):
        for step, (micro_batches, num_examples) in enumerate(
                step_batches(dataset, order, 4, Ranks(rank, rank, 2), accumulation_steps=2)):
            for micro_step, (inputs, _, _, weight) in enumerate(micro_batches):
                part = torch.tensor_split(torch.arange(step * 16, min(step * 16 + 16, 104)), 4)[micro_step * 2 + rank]
                assert inputs.shape[0] == len(part)
                seen += order[part].tolist()
                weights.append((step, weight))
                expected = 2 * answer_tokens[order[part]].sum() / answer_tokens[order[step * 16:step * 16 + 16]].sum()
                assert weight == pytest.approx(float(expected))
    assert sorted(seen) == list(range(104))  # each example once per epoch, over both ranks
    for step in range(7):  # per step, the weights of both ranks' micro-batches average to 1 (DDP averages)
        assert sum(w for s, w in weights if s == step) / 2 == pytest.approx(1.0)


@slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_training_matches_eager_training(data_dir, tmp_path):
    results = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        output_dir = tmp_path / name
        run_script("train.py", *train_args(data_dir, output_dir, "--num-epochs", 1, "--dropout", 0),
                   home=tmp_path)
        results[name] = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    losses = {name: [e["train/loss"] for e in history if "train/loss" in e] for name, history in results.items()}
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-3)


@slow
def test_running_sum_probe_learns_to_read_the_column_totals(tmp_path):
    data_dir, output_dir = tmp_path / "data", tmp_path / "run"
    config = DataConfig(num_examples=2000, max_digits=2, operations="*", format="padded-reversed-all", seed=0)
    write_splits(str(data_dir), generate_splits(config), config)
    trained = run_script("train.py", *train_args(data_dir, output_dir, "--running-sum-loss", 1), home=tmp_path)
    assert "running-sum probe: 1600 of 1600 training problems have running sums" in trained.stderr
    trained = load_model(str(output_dir), torch.device("cpu"))
    val = ArithmeticDataset.from_file(str(data_dir / "val.json"), trained.tokenizer)
    add_running_sums(val)
    inputs, targets, extra = val.batch(torch.arange(len(val)))
    with torch.no_grad():  # the probe's term is its squared error per answer token: back to per running sum
        probe_term = (ProbedModel(trained.model, trained.probe, 1.0)(inputs, targets, **extra)[1]
                      - trained.model(inputs, targets)[1])
    running_sums = extra["running_sums"]
    has_sum = running_sums.isfinite()
    mean_squared_error = probe_term * (targets != IGNORE_INDEX).sum() / has_sum.sum()
    assert mean_squared_error < 0.1 * (running_sums[has_sum] / 10).var()  # measured 0.04; a constant: 1
    # evaluate.py reports the same readings by answer digit place, in units: 2x2 digits have 4 places, each in
    # every val problem
    run_script("evaluate.py", "--checkpoint", output_dir, "--data-dir", data_dir, "--split", "val",
               "--no-edge-cases", "--output-file", tmp_path / "eval.json", home=tmp_path)
    by_place = json.loads((tmp_path / "eval.json").read_text())["running_sum_probe"]
    assert list(by_place) == ["0", "1", "2", "3"] and all(p["count"] == len(val) for p in by_place.values())
    squared_errors = sum(p["rmse"] ** 2 * p["count"] for p in by_place.values()) / 100  # in tens, as the loss
    assert squared_errors / has_sum.sum() == pytest.approx(mean_squared_error.item(), rel=1e-3)
    # train.py reads the probe at each val evaluation too: better as training goes (measured 8.8 units RMSE at the
    # first, 4.5 at the last), and at the best model's step what the probe's term above gives
    rmse = {entry["step"]: entry["val/running_sum_probe/rmse"] for entry in
            json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
            if "val/running_sum_probe/rmse" in entry}
    assert list(rmse) == [100, 200, 300, 400] and rmse[400] < 0.75 * rmse[100]
    best_step = torch.load(output_dir / "best_model.pt", weights_only=True)["step"]
    assert rmse[best_step] == pytest.approx(10 * mean_squared_error.item() ** 0.5, rel=1e-3)
    assert list(json.loads((output_dir / "test_results.json").read_text())["running_sum_probe"]) == ["0", "1", "2", "3"]


@slow
def test_running_sum_loss_without_multiplication_is_a_clear_error(data_dir, tmp_path):
    result = run_script("train.py", *train_args(data_dir, tmp_path / "run", "--running-sum-loss", 1),
                        home=tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "train.json has no problems with running sums (two-operand multiplication)" in result.stderr


def test_a_run_resumes_in_the_directory_it_is_found_in_whatever_its_saved_config_says(tmp_path):
    saved = TrainConfig(learning_rate=3e-3, output_dir="where/it/was/trained")
    (tmp_path / "training_config.json").write_text(json.dumps({"train_config": asdict(saved)}))
    config, checkpoint, source, _ = resumed_run(TrainConfig(output_dir=str(tmp_path)), frozenset())
    assert (config.output_dir, config.learning_rate, checkpoint) == (str(tmp_path), 3e-3, None)
    assert source == str(tmp_path / "training_config.json")


def test_a_run_extended_with_more_epochs_decays_from_where_it_is_without_a_jump():
    config = TrainConfig(learning_rate=1e-3, warmup_steps=10, min_learning_rate_ratio=0.1)
    rate = learning_rate_at(60, config, 100)  # mid-run, extended to 300 steps from here
    rates = [learning_rate_at(step, config, 300, 10, (60, rate)) for step in range(60, 301)]
    assert rates[0] == pytest.approx(rate) and rates[-1] == pytest.approx(1e-4)
    assert all(later <= earlier for earlier, later in zip(rates, rates[1:]))
    # a finished run sits at the floor: extended, it goes on there
    assert learning_rate_at(150, config, 200, 10, (100, 1e-4)) == pytest.approx(1e-4)


@slow
def test_a_finished_run_is_extended_by_giving_more_epochs(reference_run, tmp_path):
    output_dir = tmp_path / "copy"
    shutil.copytree(reference_run, output_dir)
    result = run_script("train.py", "--output-dir", output_dir, "--num-epochs", 10, home=tmp_path)
    assert "resuming" in result.stderr and "the run planned 8" in result.stderr
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["step"] == state["total_steps"] == 500
    rates = [entry["train/learning_rate"] for entry in state["log_history"]
             if "train/learning_rate" in entry and entry["step"] > 400]
    assert rates and all(rate == pytest.approx(3e-4) for rate in rates)  # the floor, 0.1 x 3e-3
    assert json.loads((output_dir / "training_config.json").read_text())["train_config"]["num_epochs"] == 10
    assert not torch.equal(final_weights(output_dir)["ln_final.weight"],
                           final_weights(reference_run)["ln_final.weight"])


@slow
def test_init_from_starts_a_new_run_from_the_weights_of_another(reference_run, data_dir, tmp_path):
    output_dir = tmp_path / "fine-tuned"
    # A learning rate too small to change a prediction: the new run scores what the model it starts from scores
    result = run_script("train.py", "--init-from", reference_run, *train_args(data_dir, output_dir),
                        "--learning-rate", 1e-12, "--num-epochs", 1, "--model-size", "tiny", home=tmp_path)
    assert f"starting from the weights of {reference_run / 'best_model.pt'}" in result.stderr
    started = json.loads((output_dir / "test_results.json").read_text())
    original = json.loads((reference_run / "test_results.json").read_text())
    assert started["exact_match"] == original["exact_match"]
    assert started["loss"] == pytest.approx(original["loss"], rel=1e-5)  # an untrained model's is ~2.5 x higher
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["step"] == 50  # a run of its own: 1 epoch of 50 steps, counted from 0
    longer = tmp_path / "longer"  # a learned position table grown for longer problems keeps the positions it had
    run_script("train.py", "--init-from", reference_run, *train_args(data_dir, longer), "--learning-rate", 1e-12,
               "--num-epochs", 1, "--max-length", 40, home=tmp_path)
    grown = torch.load(longer / "best_model.pt", weights_only=True)["model"]["position_embedding.weight"]
    had = torch.load(reference_run / "best_model.pt", weights_only=True)["model"]["position_embedding.weight"]
    assert grown.shape == (40, had.shape[1]) and torch.allclose(grown[:len(had)], had, atol=1e-6)
    conflict = run_script("train.py", "--init-from", reference_run, "--hidden-size", 32,
                          *train_args(data_dir, tmp_path / "other"), home=tmp_path, check=False)
    assert conflict.returncode == 1 and conflict.stderr.strip().endswith(
        "a run started from a model has that model's shape; drop --hidden-size 32 (the model has 64)")


@slow
def test_a_run_stops_at_the_first_evaluation_that_reaches_its_target_and_stays_finished(reference_run, data_dir,
                                                                                          tmp_path):
    history = json.loads((reference_run / "trainer_state.json").read_text())["log_history"]
    evaluations = [entry for entry in history if "val/exact_match" in entry]
    target = evaluations[1]["val/exact_match"]  # reached at the second evaluation at the latest
    first = next(entry for entry in evaluations if entry["val/exact_match"] >= target)
    assert 0 < target and first["step"] < evaluations[-1]["step"]
    output_dir = tmp_path / "run"
    args = train_args(data_dir, output_dir, "--stop-at-exact-match", target)
    result = run_script("train.py", *args, home=tmp_path)
    assert f"reached --stop-at-exact-match {target} at step {first['step']}/" in result.stderr
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["step"] == first["step"] < state["total_steps"]
    assert state["reached_at"]["step"] == first["step"]
    assert state["reached_at"]["training_seconds"] == state["training_seconds"] > 0
    assert json.loads((output_dir / "test_results.json").read_text())["model_step"] == first["step"]
    assert (output_dir / "model.safetensors").exists()
    again = run_script("train.py", *args, home=tmp_path)  # finished: not trained further
    assert "already finished" in again.stderr and "higher --stop-at-exact-match" in again.stderr
    assert json.loads((output_dir / "trainer_state.json").read_text())["step"] == first["step"]
