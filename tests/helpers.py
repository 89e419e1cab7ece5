"""Helpers for the tests: running the scripts as a user would, the flags of a short real training run,
interrupting one, and the contents of real checkpoints of a tiny model."""

import os
import subprocess
import sys
import time
from dataclasses import asdict

import torch

from math_llm import checkpoint as ckpt
from math_llm.formats import FORMATS
from math_llm.model import ModelConfig, Transformer
from math_llm.probe import RunningSumProbe
from math_llm.tokenizer import Tokenizer
from math_llm.trained_model import TrainedModel
from math_llm.trainer import TrainConfig, build_optimizer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Set by conftest for each test: whether it is marked slow, which every test that starts a process must be.
SLOW_TEST = {"running": False}


def script_env(home):
    """No W&B login (HOME without .netrc, no API key), so W&B must choose offline mode by itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(home), PYTHONUNBUFFERED="1")
    return env


def check_slow_test():
    assert SLOW_TEST["running"], "a test that starts a process must be marked slow (pytest.mark.slow)"


def run_script(name, *args, home, check=True, cwd=REPO_ROOT, **kwargs):
    check_slow_test()
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", name), *map(str, args)],
                            capture_output=True, text=True, env=script_env(home), cwd=cwd, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{name} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


# 1600 training problems / batch 32 = 50 steps per epoch, 8 epochs = 400 steps; dropout makes the RNG matter,
# and checkpoints every 30 steps fall inside epochs, so resuming must find its place within one.
RUN_FLAGS = ["--model-size", "tiny", "--num-epochs", 8, "--learning-rate", 3e-3, "--warmup-steps", 20,
             "--dropout", 0.1, "--save-steps", 30, "--eval-steps", 100, "--logging-steps", 50, "--no-wandb"]


def train_args(data_dir, output_dir, *extra):
    return ["--data-dir", data_dir, "--output-dir", output_dir, *RUN_FLAGS, *extra]


def interrupt_training(data_dir, output_dir, home, after_checkpoint, sig, flags=None):
    """Runs train.py until checkpoint-<after_checkpoint>.pt exists, then sends `sig`; returns (exit code, output)."""
    check_slow_test()
    process = subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, "scripts", "train.py"),
                                *map(str, flags or train_args(data_dir, output_dir))],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=script_env(home),
                               stdin=subprocess.DEVNULL)
    checkpoint = os.path.join(output_dir, f"checkpoint-{after_checkpoint}.pt")
    deadline = time.time() + 120
    while not os.path.exists(checkpoint):
        assert process.poll() is None, f"training ended before {checkpoint} appeared:\n{process.stdout.read()}"
        assert time.time() < deadline, f"{checkpoint} did not appear within 120 s"
        time.sleep(0.005)
    process.send_signal(sig)
    output, _ = process.communicate(timeout=120)
    assert not os.path.exists(os.path.join(output_dir, "pytorch_model.bin")), "the run ended before the signal"
    return process.returncode, output


def final_weights(output_dir):
    """The pytorch_model.bin a run wrote."""
    return torch.load(os.path.join(output_dir, "pytorch_model.bin"), weights_only=True)


def num_carries(problem):
    """The carries (borrows) of a problem as evaluation counts them; None for operations without."""
    carries = problem.operation.carries
    return carries.count(problem.operands) if carries else None


def tiny_model_checkpoint(probe=False):
    """The contents a best_model.pt of a tiny model has."""
    config = TrainConfig(ModelConfig("tiny", max_length=16), running_sum_loss=float(probe))
    model = Transformer(config.model)
    trained = TrainedModel(model, Tokenizer(), FORMATS["plain"], None, {"max_digits": 2},
                           RunningSumProbe(64) if probe else None)
    return {**ckpt.model_contents(config, trained), "step": 1, "selected_on": "val", "selection_metrics": {}}


def training_checkpoint(step):
    """The contents a checkpoint-N.pt of a tiny model has, after one optimizer step."""
    contents = tiny_model_checkpoint()
    model = Transformer(ModelConfig(**contents["train_config"]["model"]))
    optimizer = build_optimizer(model, TrainConfig())
    model(torch.tensor([[1, 2, 3]]), torch.tensor([[2, 3, 4]]))[1].backward()
    optimizer.step()
    del contents["step"], contents["selected_on"], contents["selection_metrics"]
    return {**contents, "model": model.state_dict(), "state": asdict(ckpt.TrainingState(step=step)),
            "optimizer": optimizer.state_dict(), "scaler": {}, "rng": [ckpt.capture_rng_state()],
            "train_data_fingerprint": "", "precision": "fp32"}


def save_training_checkpoints(output_dir, steps):
    for step in steps:
        ckpt.save_atomic(training_checkpoint(step), ckpt.checkpoint_path(str(output_dir), step))
