"""Faults that must cost no data and read as one line: incomplete checkpoints skipped for older whole ones, a damaged
training_config.json, two runs on one output dir, concurrent writers of one file, pruning beside an unreadable
checkpoint, output dirs that cannot be written, and numbers that are not numbers."""

import json
import logging
import os
import signal
import subprocess
import sys

import pytest
import torch

from math_llm import checkpoint as ckpt
from math_llm.errors import CheckpointError, ConfigError
from math_llm.evaluation import EvalConfig, evaluate_checkpoint
from math_llm.files import atomic_open
from math_llm.run_lock import LOCK_FILE, OutputDirLock, writable_dir
from math_llm.trainer import TrainConfig, resumed_run
from tests.helpers import (check_slow_test, run_script, save_training_checkpoints, script_env,
                           tiny_model_checkpoint, train_args, training_checkpoint)


def without_model_weight(contents):
    del contents["model"]["ln_final.weight"]


def with_weight_of_another_shape(contents):
    contents["model"]["token_embedding.weight"] = torch.zeros(3, 5)


def with_optimizer_of_another_model(contents):
    first = next(iter(contents["optimizer"]["state"]))
    contents["optimizer"]["state"][first]["exp_avg"] = torch.zeros(7)


def without_model_config(contents):
    del contents["train_config"]["model"]


def with_malformed_rng(contents):
    contents["rng"] = [{"python": None}]


@pytest.mark.parametrize("damage", [without_model_weight, with_weight_of_another_shape,
                                    with_optimizer_of_another_model, without_model_config, with_malformed_rng])
def test_a_checkpoint_that_loads_but_is_not_whole_is_skipped_for_the_previous_one(tmp_path, caplog, damage):
    save_training_checkpoints(tmp_path, [1])
    damaged = training_checkpoint(2)
    damage(damaged)
    ckpt.save_atomic(damaged, ckpt.checkpoint_path(str(tmp_path), 2))
    checkpoint, path = ckpt.load_latest_checkpoint(str(tmp_path))
    assert path.endswith("checkpoint-1.pt") and checkpoint["state"]["step"] == 1
    assert "checkpoint-2.pt: incomplete or damaged checkpoint (" in caplog.text
    assert "trying the previous checkpoint" in caplog.text


def test_a_best_model_with_weights_of_another_shape_is_one_line_naming_it(tmp_path):
    contents = tiny_model_checkpoint()
    with_weight_of_another_shape(contents)
    ckpt.save_atomic(contents, str(tmp_path / "best_model.pt"))
    with pytest.raises(CheckpointError, match=r"best_model.pt: incomplete or damaged checkpoint \(its model weight "
                                              r"token_embedding.weight has shape \(3, 5\)"):
        ckpt.load_model(str(tmp_path), torch.device("cpu"))


@pytest.mark.parametrize("content", ["{not json", "[]", '{"other": 1}'])
def test_a_damaged_training_config_without_checkpoints_is_one_line(tmp_path, content):
    (tmp_path / "training_config.json").write_text(content)
    with pytest.raises(ConfigError, match=r"training_config.json: damaged \(.*\); this run has no checkpoint"):
        resumed_run(TrainConfig(output_dir=str(tmp_path)), frozenset())


def test_pruning_never_counts_an_unreadable_checkpoint(tmp_path):
    save_training_checkpoints(tmp_path, (1, 2, 3))
    (tmp_path / "checkpoint-4.pt").write_bytes(b"damaged on disk")
    ckpt.remove_old_checkpoints(str(tmp_path), keep=2)
    assert [step for step, _ in ckpt.list_checkpoints(str(tmp_path))] == [2, 3, 4]


def test_two_writers_of_one_file_do_not_share_a_temp_file(tmp_path):
    path = str(tmp_path / "trainer_state.json")
    with atomic_open(path) as first:
        with atomic_open(path) as second:  # e.g. a second process writing the same file meanwhile
            second.write("second")
        first.write("first")
    assert open(path).read() == "first" and os.listdir(tmp_path) == ["trainer_state.json"]


def test_a_second_lock_on_an_output_dir_is_refused_naming_the_holder(tmp_path):
    with OutputDirLock(str(tmp_path)):
        with pytest.raises(ConfigError, match=rf"{tmp_path}: another run is using this output dir \(pid "
                                              rf"{os.getpid()} on .+, started .+\)"):
            with OutputDirLock(str(tmp_path)):
                pass
    with OutputDirLock(str(tmp_path)):  # released at the end of the first
        pass


def test_a_lock_left_by_a_dead_run_is_taken_over_with_a_warning(tmp_path, caplog):
    holder = {"pid": 999999, "host": "gone", "started": "2026-01-01 00:00:00 UTC"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(holder))  # as a SIGKILLed run leaves it: the flock died with it
    with caplog.at_level(logging.WARNING), OutputDirLock(str(tmp_path)):
        pass
    assert "taking over the lock of a run that ended without releasing it (pid 999999 on gone" in caplog.text
    caplog.clear()
    with OutputDirLock(str(tmp_path)):  # a clean release leaves nothing to warn about
        pass
    assert "taking over" not in caplog.text


@pytest.mark.slow
def test_train_on_a_locked_output_dir_refuses_naming_the_holder_and_takes_over_once_it_died(data_dir, tmp_path):
    check_slow_test()
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom math_llm.run_lock import OutputDirLock\n"
                               "with OutputDirLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)",
                               str(output_dir)], stdout=subprocess.PIPE, text=True, env=script_env(tmp_path))
    assert holder.stdout.readline() == "held\n"
    refused = run_script("train.py", *train_args(data_dir, output_dir), home=tmp_path, check=False)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert (f"{output_dir}: another run is using this output dir (pid {holder.pid} on {os.uname().nodename}, "
            f"started ") in refused.stderr
    assert sorted(os.listdir(output_dir)) == [LOCK_FILE]  # not a file of its own written, not even a log line
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    taken = run_script("train.py", *train_args(data_dir, output_dir, "--num-epochs", 1), home=tmp_path)
    assert f"taking over the lock of a run that ended without releasing it (pid {holder.pid}" in taken.stderr


@pytest.mark.parametrize("flag, value", [("learning_rate", float("nan")), ("learning_rate", float("inf")),
                                         ("max_grad_norm", float("nan"))])
def test_a_learning_rate_or_clipping_norm_that_is_not_a_number_is_refused(flag, value):
    with pytest.raises(ConfigError, match=f"--{flag.replace('_', '-')} must be a positive number.*, got {value}"):
        TrainConfig(**{flag: value})


def test_an_infinite_clipping_norm_is_torchs_no_clipping_and_allowed():
    assert TrainConfig(max_grad_norm=float("inf")).max_grad_norm == float("inf")


def unwritable_dir(tmp_path):
    """A directory this process cannot create files in: read-only permissions, or for root (whom permissions do
    not stop) a path under /sys, which is never writable."""
    if os.geteuid() != 0:
        path = tmp_path / "read-only"
        path.mkdir(mode=0o555)
        return path / "run"
    path = "/sys/math-llm-test"
    if os.access("/sys", os.W_OK) and not os.path.ismount("/sys"):
        pytest.skip("no unwritable directory on this machine")
    return path


def test_an_output_dir_that_cannot_be_written_is_one_line(tmp_path):
    target = unwritable_dir(tmp_path)
    with pytest.raises(ConfigError, match=rf"^{target}: cannot write there \(.+\); choose another --output-dir$"):
        writable_dir(str(target))
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="file: this is a file, not a directory; choose another --output-dir"):
        writable_dir(str(tmp_path / "file"))


def test_evaluate_refuses_an_unwritable_output_before_evaluating(tmp_path):
    ckpt.save_atomic(tiny_model_checkpoint(), str(tmp_path / "best_model.pt"))
    output_file = os.path.join(unwritable_dir(tmp_path), "eval.json")
    with pytest.raises(ConfigError, match="cannot write there .*; choose another --output-file"):
        evaluate_checkpoint(EvalConfig(checkpoint=str(tmp_path), data_path="no data read yet",
                                       output_file=output_file))
    (tmp_path / "taken").write_text("")
    with pytest.raises(ConfigError, match="taken: this is a file, not a directory; choose another --output-file"):
        evaluate_checkpoint(EvalConfig(checkpoint=str(tmp_path), data_path="unread",
                                       output_file=str(tmp_path / "taken" / "eval.json")))


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_scripts_refuse_an_output_dir_that_is_a_file_in_one_line(script, tmp_path):
    (tmp_path / "taken").write_text("")
    ckpt.save_atomic(tiny_model_checkpoint(), str(tmp_path / "best_model.pt"))
    flags = (["--output-dir", tmp_path / "taken"] if script == "train.py" else
             ["--checkpoint", tmp_path, "--output-file", tmp_path / "taken" / "eval.json"])
    result = run_script(script, *flags, home=tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{tmp_path / 'taken'}: this is a file, not a directory" in result.stderr


def test_a_checkpoint_whose_settings_are_invalid_is_skipped_for_the_previous_one(tmp_path, caplog):
    save_training_checkpoints(tmp_path, [1])
    damaged = training_checkpoint(2)
    damaged["train_config"]["learning_rate"] = float("nan")
    ckpt.save_atomic(damaged, ckpt.checkpoint_path(str(tmp_path), 2))
    _, checkpoint, source, _ = resumed_run(TrainConfig(output_dir=str(tmp_path)), frozenset())
    assert source.endswith("checkpoint-1.pt") and checkpoint["state"]["step"] == 1
    assert "checkpoint-2.pt: --learning-rate must be a positive number, got nan; trying the previous" in caplog.text
