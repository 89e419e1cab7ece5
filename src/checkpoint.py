"""Checkpoints: atomic writes, the last few kept, the newest readable one found, RNG state captured and restored.

Everything is stored as tensors and primitives, so `torch.load(weights_only=True)` reads it and no file can run code.
"""

import os
import random
import re

import numpy as np
import torch

from src.errors import CheckpointError
from src.files import atomic_open
from src.model import ModelConfig, Transformer
from src.tokenizer import Tokenizer

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")
BEST_MODEL = "best_model.pt"


def checkpoint_path(output_dir, step):
    return os.path.join(output_dir, f"checkpoint-{step}.pt")


def save_atomic(obj, path):
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


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
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path}: unreadable checkpoint, truncated or corrupt ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else 'no details'})") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: not a Math LLM checkpoint (holds a {type(checkpoint).__name__}, not a dict)")
    return checkpoint


def load_latest_checkpoint(output_dir, log):
    """The newest readable checkpoint as (checkpoint, path), skipping corrupt ones with a warning; None if there
    are none. If every one is unreadable, that is an error: starting over would overwrite the run."""
    checkpoints = list_checkpoints(output_dir)
    for _, path in reversed(checkpoints):
        try:
            return load_checkpoint(path), path
        except CheckpointError as error:
            log.warning(f"{error}; trying the previous checkpoint")
    if checkpoints:
        raise CheckpointError(f"{output_dir}: none of its {len(checkpoints)} checkpoints is readable; move them "
                              f"away to start this run over")
    return None


def load_model(path, device, log):
    """(model in eval mode, tokenizer, checkpoint dict, the file used) from best_model.pt, a checkpoint-N.pt, or an
    output dir (its best_model.pt, else its newest readable checkpoint)."""
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, BEST_MODEL)):
        found = load_latest_checkpoint(path, log)
        if found is None:
            raise CheckpointError(f"{path}: no {BEST_MODEL} or checkpoint-N.pt in this directory")
        checkpoint, path = found
    else:
        path = os.path.join(path, BEST_MODEL) if os.path.isdir(path) else path
        checkpoint = load_checkpoint(path)
    missing = {"model", "model_config", "vocab"} - checkpoint.keys()
    if missing:
        raise CheckpointError(f"{path}: not a Math LLM checkpoint (no {', '.join(sorted(missing))} inside)")
    try:
        model = Transformer(ModelConfig(**checkpoint["model_config"]))
        model.load_state_dict(checkpoint["model"])
    except (TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: its model_config and weights do not make a model "
                              f"({str(error).splitlines()[0]})") from None
    return model.to(device).eval(), Tokenizer(checkpoint["vocab"]), checkpoint, path


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
    # A run may resume on a node with fewer GPUs visible: each device restores the state saved for its index.
    for index, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()] if torch.cuda.is_available() else []):
        torch.cuda.set_rng_state(cuda_state, index)
