"""Data-parallel training through torchrun with 2 gloo processes on CPU: equivalence with one process, sharded
evaluation, a killed rank, automatic restart, and resuming with another number of processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from math_llm.data import write_splits
from math_llm.data_generation import DataConfig, generate_splits
from math_llm.problems import split_example
from tests.helpers import REPO_ROOT, check_slow_test, final_weights, run_script, script_env

pytestmark = pytest.mark.slow

TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
# 320 training problems, + and x; 10 steps of a global batch of 32 in fp32, no dropout: 2 x 16 = 32 x 1 = 16 x 2
# accumulated. The running-sum loss must weigh micro-batches and ranks as the cross-entropy does.
EQUIVALENCE_FLAGS = ["--model-size", "tiny", "--num-epochs", 1, "--learning-rate", 1e-3, "--warmup-steps", 2,
                     "--logging-steps", 1, "--eval-steps", 10, "--save-steps", 10, "--running-sum-loss", 1,
                     "--no-wandb"]
# conftest's data_dir: 1600 training problems, 2 x 16 per step: 50 steps per epoch, 400 steps; dropout,
# checkpoints inside epochs
FAULT_FLAGS = ["--model-size", "tiny", "--batch-size", 16, "--num-epochs", 8, "--learning-rate", 3e-3,
               "--warmup-steps", 20, "--dropout", 0.1, "--save-steps", 30, "--eval-steps", 100, "--logging-steps", 50,
               "--no-wandb"]


def torchrun(*args, home, max_restarts=0, wait=True, script=os.path.join(REPO_ROOT, "scripts", "train.py")):
    check_slow_test()
    command = [TORCHRUN, "--standalone", "--nproc_per_node", "2", "--max-restarts", str(max_restarts), script,
               *map(str, args)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=script_env(home), cwd=REPO_ROOT, stdin=subprocess.DEVNULL)
    if not wait:
        return process
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


def kill_rank_after(process, output_dir, checkpoint_step, local_rank=1):
    """SIGKILL the worker of `local_rank` once checkpoint-<checkpoint_step>.pt exists; returns the seconds until
    torchrun itself ended, and its output."""
    checkpoint = os.path.join(output_dir, f"checkpoint-{checkpoint_step}.pt")
    deadline = time.time() + 120
    while not os.path.exists(checkpoint):
        assert process.poll() is None, process.stdout.read()
        assert time.time() < deadline, f"{checkpoint} did not appear"
        time.sleep(0.005)
    os.kill(worker_pid(output_dir, local_rank), signal.SIGKILL)
    killed = time.time()
    output, _ = process.communicate(timeout=120)
    return time.time() - killed, output


def worker_pid(output_dir, local_rank):
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environment = f.read().split(b"\0")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command_line = f.read()
        except OSError:
            continue
        if f"LOCAL_RANK={local_rank}".encode() in environment and str(output_dir).encode() in command_line:
            return int(pid)
    raise AssertionError(f"no worker of local rank {local_rank} found for {output_dir}")



def logged(output_dir, key):
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [entry[key] for entry in history if key in entry]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("small_data")
    config = DataConfig(num_examples=400, seed=0, operations="+,*")
    write_splits(str(path), generate_splits(config), config)
    return path


@pytest.fixture(scope="module")
def two_process_run(small_data, tmp_path_factory):
    home, output_dir = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("two")
    output = torchrun("--data-dir", small_data, "--output-dir", output_dir, "--batch-size", 16, *EQUIVALENCE_FLAGS,
                      home=home)
    assert "global batch 32 (16 per process x 2 processes x 1 accumulation steps)" in output
    return output_dir


def test_two_processes_one_process_and_accumulation_end_with_the_same_weights(small_data, two_process_run, tmp_path):
    runs = {"two processes x 16": two_process_run}
    for name, flags in (("one process x 32", ["--batch-size", 32]),
                        ("one process x 16 x 2 accumulated", ["--batch-size", 16, "--gradient-accumulation-steps", 2])):
        runs[name] = tmp_path / name.replace(" ", "_")
        run_script("train.py", "--data-dir", small_data, "--output-dir", runs[name], *flags, *EQUIVALENCE_FLAGS,
                   home=tmp_path)
    reference = final_weights(runs["one process x 32"])
    for name, output_dir in runs.items():
        assert logged(output_dir, "step")[-1] == 10
        # Summation order differs between the three, so equality holds to float tolerance: a weight moves at most
        # about lr = 1e-3 per step, and these stay within 2e-5 after 10 steps.
        for key, value in final_weights(output_dir).items():
            torch.testing.assert_close(value, reference[key], atol=2e-5, rtol=0, msg=f"{name}: {key}")
        # The loss and gradient norm each step are those of the whole global batch (loss per answer token).
        assert logged(output_dir, "train/loss") == pytest.approx(logged(runs["one process x 32"], "train/loss"),
                                                                 rel=1e-4)
        assert logged(output_dir, "train/grad_norm") == pytest.approx(
            logged(runs["one process x 32"], "train/grad_norm"), rel=1e-3)


def test_sharded_evaluation_equals_one_process_on_the_same_split(small_data, two_process_run, tmp_path):
    sharded = json.loads((two_process_run / "test_results.json").read_text())
    run_script("evaluate.py", "--checkpoint", two_process_run, "--data-dir", small_data, "--output-file",
               tmp_path / "single.json", home=tmp_path)
    single = json.loads((tmp_path / "single.json").read_text())
    for key in ("num_examples", "exact_match", "token_accuracy", "exact_match_by_operand_digits",
                "digit_accuracy_by_place"):
        assert sharded[key] == single[key], key
    assert sharded["loss"] == pytest.approx(single["loss"], rel=1e-6)
    probe = sharded["running_sum_probe"]
    products = [text for text in json.loads((small_data / "test.json").read_text())["examples"] if "*" in text]
    assert sum(reading["count"] for reading in probe.values()) == sum(len(split_example(text)[1]) for text in products)
    for place, reading in single["running_sum_probe"].items():
        assert probe[place] == pytest.approx(reading, rel=1e-5), place


# One rank of a DDP job, run as train.py runs its training; afterwards the process must hold no gloo thread: one
# left running can abort the process as the interpreter exits, after a run that finished.
DDP_PROCESS = """
import glob
import torch
from torch.nn.parallel import DistributedDataParallel
from math_llm.distributed import run_process, setup_distributed

def train_one_step():
    setup_distributed("cpu")
    DistributedDataParallel(torch.nn.Linear(4, 4))(torch.ones(2, 4)).sum().backward()

run_process(train_one_step)
threads = [open(task + "/comm").read().strip() for task in glob.glob("/proc/self/task/*")]
assert not [name for name in threads if "gloo" in name], f"threads left after the process group: {threads}"
"""


def test_a_finished_rank_leaves_no_gloo_thread_running(tmp_path):
    script = tmp_path / "ddp_process.py"
    script.write_text(DDP_PROCESS)
    torchrun(home=tmp_path, script=script)


@pytest.fixture(scope="module")
def uninterrupted_two_process_run(data_dir, tmp_path_factory):
    home, output_dir = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("uninterrupted")
    torchrun("--data-dir", data_dir, "--output-dir", output_dir, *FAULT_FLAGS, home=home)
    return output_dir


def test_a_killed_rank_stops_the_job_quickly_with_a_clear_message(data_dir, tmp_path):
    output_dir = tmp_path / "run"
    process = torchrun("--data-dir", data_dir, "--output-dir", output_dir, *FAULT_FLAGS, home=tmp_path, wait=False)
    seconds, output = kill_rank_after(process, output_dir, 120)
    assert process.returncode != 0 and seconds < 60
    assert "rank 0: another process of this job is gone" in output and "--max-restarts" in output
    assert not (output_dir / "pytorch_model.bin").exists()


def test_torchrun_restarts_after_a_killed_rank_and_ends_with_the_weights_of_an_uninterrupted_run(
        data_dir, uninterrupted_two_process_run, tmp_path):
    output_dir = tmp_path / "run"
    process = torchrun("--data-dir", data_dir, "--output-dir", output_dir, *FAULT_FLAGS, home=tmp_path,
                       max_restarts=1, wait=False)
    _, output = kill_rank_after(process, output_dir, 120)
    assert process.returncode == 0, output
    assert "resuming" in (output_dir / "logs" / "training.log").read_text()
    expected = final_weights(uninterrupted_two_process_run)
    for key, value in final_weights(output_dir).items():
        assert torch.equal(value, expected[key]), key


def test_a_two_process_run_resumes_on_one_process_without_replaying_or_skipping_data(data_dir, tmp_path):
    output_dir = tmp_path / "run"
    process = torchrun("--data-dir", data_dir, "--output-dir", output_dir, *FAULT_FLAGS, home=tmp_path, wait=False)
    kill_rank_after(process, output_dir, 90)
    checkpoint = torch.load(output_dir / "checkpoint-90.pt", weights_only=True)
    assert checkpoint["state"]["examples_seen"] == 90 * 32 and len(checkpoint["rng"]) == 2
    resumed = run_script("train.py", "--data-dir", data_dir, "--output-dir", output_dir, *FAULT_FLAGS, home=tmp_path)
    assert "resuming" in resumed.stderr and "example 1280 of epoch 2" in resumed.stderr
    assert "holds the RNG states of 2 processes and this run has 1" in resumed.stderr
    state = json.loads((output_dir / "trainer_state.json").read_text())
    # 90 steps of 32, then 1600 - 1280 = 320 examples of epoch 2 in 20 steps of 16, then 6 epochs of 100 steps
    assert state["step"] == state["total_steps"] == 90 + 20 + 600
    final = torch.load(sorted(output_dir.glob("checkpoint-*.pt"), key=lambda p: int(p.stem.split("-")[1]))[-1],
                       weights_only=True)
    assert final["state"]["examples_seen"] == 8 * 1600
