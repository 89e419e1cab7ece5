import os
import pickle
import random

import numpy as np
import pytest
import torch

from src import checkpoint as ckpt
from src.errors import CheckpointError


def test_save_is_atomic_and_loads_back(tmp_path):
    path = tmp_path / "checkpoint-5.pt"
    ckpt.save_atomic({"step": 5, "weights": torch.ones(3)}, str(path))
    assert os.listdir(tmp_path) == ["checkpoint-5.pt"]  # no temp file left behind
    assert ckpt.load_checkpoint(str(path))["step"] == 5


def test_latest_is_found_by_step_number_not_name_order(tmp_path):
    for step in (9, 10, 100):
        ckpt.save_atomic({"step": step}, ckpt.checkpoint_path(str(tmp_path), step))
    assert [step for step, _ in ckpt.list_checkpoints(str(tmp_path))] == [9, 10, 100]
    ckpt.remove_old_checkpoints(str(tmp_path), keep=2)
    assert [step for step, _ in ckpt.list_checkpoints(str(tmp_path))] == [10, 100]


def test_truncated_checkpoint_is_reported_by_name(tmp_path):
    path = tmp_path / "checkpoint-3.pt"
    ckpt.save_atomic({"step": 3, "weights": torch.randn(1000)}, str(path))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=r"checkpoint-3.pt: unreadable checkpoint, truncated or corrupt"):
        ckpt.load_checkpoint(str(path))


def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path, caplog):
    ckpt.save_atomic({"step": 1}, ckpt.checkpoint_path(str(tmp_path), 1))
    ckpt.save_atomic({"step": 2}, ckpt.checkpoint_path(str(tmp_path), 2))
    with open(ckpt.checkpoint_path(str(tmp_path), 2), "wb") as f:
        f.write(b"not a checkpoint")
    import logging
    checkpoint, path = ckpt.load_latest_checkpoint(str(tmp_path), logging.getLogger("test"))
    assert checkpoint["step"] == 1 and path.endswith("checkpoint-1.pt")
    assert "checkpoint-2.pt: unreadable" in caplog.text


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_checkpoint_cannot_run_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, str(path), pickle_module=pickle)
    with pytest.raises(CheckpointError, match="evil.pt: unreadable"):
        ckpt.load_checkpoint(str(path))


def test_missing_checkpoint_is_reported_by_name(tmp_path):
    with pytest.raises(CheckpointError, match="nowhere.pt: checkpoint not found"):
        ckpt.load_model(str(tmp_path / "nowhere.pt"), torch.device("cpu"))
    with pytest.raises(CheckpointError, match="no best_model.pt or checkpoint-N.pt"):
        ckpt.load_model(str(tmp_path), torch.device("cpu"))


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    ckpt.save_atomic({"rng": ckpt.capture_rng_state()}, str(tmp_path / "rng.pt"))
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.restore_rng_state(ckpt.load_checkpoint(str(tmp_path / "rng.pt"))["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
