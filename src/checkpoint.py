"""Checkpoints: atomic writes, the last few kept, the newest readable one found, RNG state captured and restored.

Everything is stored as tensors and primitives, so `torch.load(weights_only=True)` reads it and no file can run code.
"""

import os
import random
import re

import numpy as np
import torch

from src.errors import CheckpointError
from src.model import ModelConfig, Transformer
from src.tokenizer import Tokenizer

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")
BEST_MODEL = "best_model.pt"


def checkpoint_path(output_dir, step):
    return os.path.join(output_dir, f"checkpoint-{step}.pt")


def save_atomic(obj, path):
    """Write to a temp file, fsync, then rename: a crash leaves the old file or the new one, never half of one."""
    temp_path = f"{path}.tmp"
    with open(temp_path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp_path, path)


def list_checkpoints(output_dir):
    """[(step, path)] sorted by step; the step comes from the name, never from file times."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), os.path.join(output_dir, name))
             for name in os.listdir(output_dir) if (m := CHECKPOINT_NAME.match(name))]
    return sorted(found)


def remove_old_checkpoints(output_dir, keep):
    for _, path in list_checkpoints(output_dir)[:-keep]:
        os.remove(path)


def load_checkpoint(path):
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path}: unreadable checkpoint, truncated or corrupt ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else 'no details'})") from None


def load_latest_checkpoint(output_dir, log):
    """The newest readable checkpoint as (checkpoint, path), skipping corrupt ones with a warning; None if none."""
    for _, path in reversed(list_checkpoints(output_dir)):
        try:
            return load_checkpoint(path), path
        except CheckpointError as error:
            log.warning(f"{error}; falling back to the previous checkpoint")
    return None


def resolve_model_path(path):
    """An output dir means its best_model.pt, else its newest checkpoint; a file is taken as it is."""
    if not os.path.isdir(path):
        return path
    best = os.path.join(path, BEST_MODEL)
    if os.path.exists(best):
        return best
    checkpoints = list_checkpoints(path)
    if not checkpoints:
        raise CheckpointError(f"{path}: no {BEST_MODEL} or checkpoint-N.pt in this directory")
    return checkpoints[-1][1]


def load_model(path, device):
    """(model in eval mode, tokenizer, checkpoint dict) from best_model.pt, a checkpoint-N.pt, or an output dir."""
    path = resolve_model_path(path)
    checkpoint = load_checkpoint(path)
    if "model" not in checkpoint or "model_config" not in checkpoint:
        raise CheckpointError(f"{path}: not a Math LLM checkpoint (no model weights or model_config inside)")
    model = Transformer(ModelConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), Tokenizer(checkpoint["vocab"]), checkpoint


def capture_rng_state():
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "position": numpy_state[2],
                  "has_gauss": numpy_state[3], "cached_gaussian": numpy_state[4]},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state):
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
