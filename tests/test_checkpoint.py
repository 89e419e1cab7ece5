"""Checkpoint files: atomic writes, the newest readable one found by step, fallbacks and clear errors for corrupt,
foreign, code-running or older-format files, and RNG state through a weights-only load."""

import argparse
import os
import pickle
import random
import sys
import types

import numpy as np
import pytest
import torch

from math_llm import checkpoint as ckpt
from math_llm.errors import CheckpointError
from tests.helpers import save_training_checkpoints, tiny_model_checkpoint


def test_a_failed_save_leaves_the_previous_file_whole(tmp_path):
    path = tmp_path / "checkpoint-5.pt"
    ckpt.save_atomic({"step": 5, "weights": torch.ones(3)}, str(path))
    with pytest.raises(Exception):
        ckpt.save_atomic({"step": 6, "unpicklable": lambda: None}, str(path))
    assert os.listdir(tmp_path) == ["checkpoint-5.pt"]  # no temp file left behind
    assert torch.load(path, weights_only=True)["step"] == 5


def test_latest_is_found_by_step_number_not_name_order(tmp_path):
    save_training_checkpoints(tmp_path, (9, 10, 100))
    assert [step for step, _ in ckpt.list_checkpoints(str(tmp_path))] == [9, 10, 100]
    ckpt.remove_old_checkpoints(str(tmp_path), keep=2)
    assert [step for step, _ in ckpt.list_checkpoints(str(tmp_path))] == [10, 100]


def test_truncated_checkpoint_is_reported_by_name(tmp_path):
    path = tmp_path / "checkpoint-3.pt"
    ckpt.save_atomic({"step": 3, "weights": torch.randn(1000)}, str(path))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=r"checkpoint-3.pt: unreadable checkpoint, truncated or corrupt"):
        ckpt.load_checkpoint(str(path))


def test_a_model_round_trips_through_best_model_with_its_probe(tmp_path):
    contents = tiny_model_checkpoint(probe=True)
    torch.nn.init.constant_(contents["probe"]["linear.bias"], 2.5)
    ckpt.save_atomic(contents, str(tmp_path / "best_model.pt"))
    trained = ckpt.load_model(str(tmp_path), torch.device("cpu"))
    assert trained.source == str(tmp_path / "best_model.pt") and trained.step == 1
    assert trained.data_format.name == "plain" and trained.trained_lengths == [1, 2]
    assert not trained.model.training and trained.probe.linear.bias.item() == 2.5
    weights = trained.model.state_dict()
    assert all(torch.equal(weights[name], contents["model"][name]) for name in contents["model"])


def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path, caplog):
    save_training_checkpoints(tmp_path, [1])
    with open(ckpt.checkpoint_path(str(tmp_path), 2), "wb") as f:
        f.write(b"not a checkpoint")
    checkpoint, path = ckpt.load_latest_checkpoint(str(tmp_path))
    assert checkpoint["state"]["step"] == 1 and path.endswith("checkpoint-1.pt")
    assert "checkpoint-2.pt: unreadable" in caplog.text


def test_no_readable_checkpoint_at_all_is_an_error_not_a_fresh_start(tmp_path):
    (tmp_path / "checkpoint-1.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="none of its 1 checkpoints is readable"):
        ckpt.load_latest_checkpoint(str(tmp_path))


def test_a_checkpoint_of_another_format_version_is_refused_in_one_line(tmp_path):
    contents = tiny_model_checkpoint()
    for version, written_by in ((None, "an older"), (ckpt.FORMAT_VERSION + 1, "a newer"), ("1", "an older")):
        ckpt.save_atomic({**contents, "format_version": version}, str(tmp_path / "best_model.pt"))
        with pytest.raises(CheckpointError, match=f"best_model.pt: checkpoint format {version!r}, written by "
                                                  f"{written_by} version of Math LLM; this code reads format "
                                                  f"{ckpt.FORMAT_VERSION}"):
            ckpt.load_model(str(tmp_path), torch.device("cpu"))


def test_an_output_dir_without_best_model_uses_its_newest_readable_checkpoint(tmp_path):
    save_training_checkpoints(tmp_path, [1])
    (tmp_path / "checkpoint-2.pt").write_bytes(b"garbage")
    trained = ckpt.load_model(str(tmp_path), torch.device("cpu"))
    assert trained.step == 1 and trained.source.endswith("checkpoint-1.pt")


def test_a_checkpoint_that_is_not_a_model_is_reported_by_name(tmp_path):
    ckpt.save_atomic(torch.ones(3), str(tmp_path / "tensor.pt"))
    with pytest.raises(CheckpointError, match="tensor.pt: not a Math LLM checkpoint"):
        ckpt.load_model(str(tmp_path / "tensor.pt"), torch.device("cpu"))
    ckpt.save_atomic(tiny_model_checkpoint()["model"], str(tmp_path / "pytorch_model.bin"))  # the weights alone
    with pytest.raises(CheckpointError, match="pytorch_model.bin: weights alone, and the training_config.json that "
                                              "describes their model is not readable beside them .* give "
                                              "best_model.pt or checkpoint-N.pt"):
        ckpt.load_model(str(tmp_path / "pytorch_model.bin"), torch.device("cpu"))
    ckpt.save_atomic({**tiny_model_checkpoint(), "model": {}}, str(tmp_path / "empty.pt"))
    with pytest.raises(CheckpointError, match="empty.pt: incomplete or damaged checkpoint .its model weights lack"):
        ckpt.load_model(str(tmp_path / "empty.pt"), torch.device("cpu"))


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def escaping_module():
    """A module whose name holds a terminal escape code, with a function a pickle can name."""
    name = "evil\x1b[2Jmodule"
    module = types.ModuleType(name)
    module.payload = lambda: None
    module.payload.__module__, module.payload.__qualname__ = name, "payload"
    sys.modules[name] = module
    return module


@pytest.mark.parametrize("content, cause", [
    (lambda: {"model": Payload()}, "GLOBAL posix.system"),  # a blocked module: torch names it in its own words
    (lambda: {"config": argparse.Namespace(lr=1)}, "Unsupported global: GLOBAL argparse.Namespace was not an "
                                                    "allowed global by default."),
    (lambda: {"model": escaping_module().payload}, "GLOBAL evil\\x1b[2Jmodule.payload"),
])
def test_a_checkpoint_that_would_run_code_is_refused_saying_so(tmp_path, content, cause):
    path = tmp_path / "evil.pt"
    torch.save(content(), str(path), pickle_module=pickle)
    with pytest.raises(CheckpointError) as refusal:
        ckpt.load_checkpoint(str(path))
    message = str(refusal.value)
    assert message.startswith(f"{path}: refused: loading it would run code") and cause in message
    assert "truncated" not in message and "\x1b" not in message and "\n" not in message


def test_missing_checkpoint_is_reported_by_name(tmp_path):
    with pytest.raises(CheckpointError, match="nowhere.pt: checkpoint not found"):
        ckpt.load_model(str(tmp_path / "nowhere.pt"), torch.device("cpu"))
    with pytest.raises(CheckpointError, match="no best_model.pt or checkpoint-N.pt"):
        ckpt.load_model(str(tmp_path), torch.device("cpu"))


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    ckpt.save_atomic({"rng": ckpt.capture_rng_state()}, str(tmp_path / "rng.pt"))
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
