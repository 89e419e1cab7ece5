"""Checkpoints: what a run saves and how it gets it back. Atomic writes, the last few kept, the newest readable one
found; a format version in every file (an unknown one is refused in one line); the typed training state; RNG state
captured and restored.

Everything is stored as tensors and primitives, so `torch.load(weights_only=True)` reads it and no file can run code.
"""

import logging
import math
import os
import random
import re
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from math_llm.errors import CheckpointError, ConfigError
from math_llm.files import atomic_open
from math_llm.formats import data_format
from math_llm.model import ModelConfig, Transformer
from math_llm.probe import RunningSumProbe
from math_llm.tokenizer import Tokenizer
from math_llm.trained_model import TrainedModel

FORMAT_VERSION = 1  # raised whenever what a checkpoint holds changes
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")
BEST_MODEL = "best_model.pt"
# What every checkpoint holds, training or best model: enough to rebuild the model and feed it
MODEL_KEYS = {"format_version", "train_config", "vocab", "data_format", "operand_width", "data_config", "model",
              "probe"}
TRAINING_KEYS = MODEL_KEYS | {"state", "train_data_fingerprint", "precision", "optimizer", "scaler", "rng"}
log = logging.getLogger(__name__)


@dataclass
class TrainingState:
    """Where a run is: saved in each checkpoint, restored on resume."""
    step: int = 0
    examples_seen: int = 0  # all epochs together, whatever the number of processes
    best_exact_match: float = -1.0  # of the evaluations so far on the selection set (--selection-data), else val
    best_loss: float = math.inf  # the loss of that evaluation (ties of exact match go to the lower loss)
    warmup_steps: int = 0  # fixed when the run starts, so a resume with another global batch does not warm up anew
    training_seconds: float = 0.0  # in training steps, evaluation and saving excluded
    evaluation_seconds: float = 0.0
    log_history: list = field(default_factory=list)  # every logged interval and val evaluation


def checkpoint_path(output_dir, step):
    return os.path.join(output_dir, f"checkpoint-{step}.pt")


def save_atomic(obj, path):
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def model_contents(train_config, trained):
    """What every checkpoint holds of a model: its configs, what it reads, its weights (the raw model's, never a
    compiled or DDP wrapper's) and its probe's."""
    return {"format_version": FORMAT_VERSION, "train_config": asdict(train_config), **trained.description(),
            "model": trained.model.state_dict(), "probe": trained.probe.state_dict() if trained.probe else None}


def save_training_checkpoint(path, train_config, trained, state, optimizer, scaler, rng_states, fingerprint,
                             precision):
    """`rng_states`: every rank's RNG state, in rank order; `fingerprint`: the training split's."""
    save_atomic({**model_contents(train_config, trained), "state": asdict(state), "optimizer": optimizer.state_dict(),
                 "scaler": scaler.state_dict(), "rng": rng_states, "train_data_fingerprint": fingerprint,
                 "precision": precision}, path)


def save_best_model(path, train_config, trained, step, selected_on, metrics):
    """`selected_on`: "val" or "selection" (--selection-data), the set whose exact match chose it, with `metrics`."""
    save_atomic({**model_contents(train_config, trained), "step": step, "selected_on": selected_on,
                 "selection_metrics": metrics}, path)


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


def load_checkpoint(path, required=MODEL_KEYS):
    """The checkpoint at `path` as a dict, with its format version and the `required` keys checked."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path}: unreadable checkpoint, truncated or corrupt ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else 'no details'})") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: not a Math LLM checkpoint (holds a {type(checkpoint).__name__}, not a dict)")
    version = checkpoint.get("format_version")
    if version is None and not {"model", "train_config", "model_config"} & checkpoint.keys():
        raise CheckpointError(f"{path}: not a Math LLM checkpoint (a dict of {len(checkpoint)} entries without configs, "
                              f"such as the weights alone of pytorch_model.bin; give best_model.pt or checkpoint-N.pt)")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise CheckpointError(f"{path}: checkpoint format {version!r}, written by "
                              f"{'a newer' if newer else 'an older'} version of Math LLM; this code reads format "
                              f"{FORMAT_VERSION} (use the version that wrote it, or train again)")
    if missing := required - checkpoint.keys():
        raise CheckpointError(f"{path}: not a Math LLM checkpoint (no {', '.join(sorted(missing))} inside)")
    return checkpoint


def load_latest_checkpoint(output_dir):
    """The newest readable training checkpoint as (checkpoint, path), skipping unreadable ones with a warning; None
    if there are none. If every one is unreadable, that is an error: starting over would overwrite the run."""
    checkpoints = list_checkpoints(output_dir)
    for _, path in reversed(checkpoints):
        try:
            return load_checkpoint(path, TRAINING_KEYS), path
        except CheckpointError as error:
            log.warning(f"{error}; trying the previous checkpoint")
    if checkpoints:
        raise CheckpointError(f"{output_dir}: none of its {len(checkpoints)} checkpoints is readable; move them "
                              f"away to start this run over")
    return None


def load_model(path, device):
    """The TrainedModel, in eval mode, of best_model.pt, a checkpoint-N.pt, or an output dir (its
    best_model.pt, else its newest readable checkpoint)."""
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, BEST_MODEL)):
        found = load_latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"{path}: no {BEST_MODEL} or checkpoint-N.pt in this directory")
        checkpoint, path = found
    else:
        path = os.path.join(path, BEST_MODEL) if os.path.isdir(path) else path
        checkpoint = load_checkpoint(path)
    try:
        config = ModelConfig(**checkpoint["train_config"]["model"])
        model = Transformer(config)
        model.load_state_dict(checkpoint["model"])
        probe = None
        if checkpoint["probe"] is not None:
            probe = RunningSumProbe(config.hidden_size)
            probe.load_state_dict(checkpoint["probe"])
        step = checkpoint["step"] if "step" in checkpoint else checkpoint["state"]["step"]
        return TrainedModel(model.to(device).eval(), Tokenizer(checkpoint["vocab"]),
                            data_format(checkpoint["data_format"]), checkpoint["operand_width"],
                            checkpoint["data_config"], probe.to(device) if probe else None, path, step)
    except (TypeError, ValueError, KeyError, RuntimeError) as error:
        raise CheckpointError(f"{path}: its configs and weights do not make a model "
                              f"({str(error).splitlines()[0]})") from None


def check_resumable(checkpoint, source, train_path, fingerprint, precision):
    """A resumed run must read the training data it started with (same examples, same order; `fingerprint` is that
    of the data at `train_path`), or its position in it is lost; another precision is a warning."""
    if checkpoint["train_data_fingerprint"] != fingerprint:
        raise ConfigError(f"{source}: {train_path} changed since this run started, so its position in the data is "
                          f"lost; restore that data or use a new --output-dir")
    if checkpoint["precision"] != precision:
        log.warning(f"{source} was trained with {checkpoint['precision']} and resumes with {precision}: it "
                    f"continues, but will not match an uninterrupted run exactly")


def restore_training(checkpoint, source, trained, optimizer, scaler, ranks, seed):
    """The TrainingState of a training checkpoint, after restoring from it the model and its probe, the optimizer,
    the scaler and this rank's RNG."""
    try:
        trained.model.load_state_dict(checkpoint["model"])
        if trained.probe is not None:
            trained.probe.load_state_dict(checkpoint["probe"])
    except RuntimeError as error:  # weights of another shape or encoding under the same config
        raise CheckpointError(f"{source}: its weights do not fit the model ({str(error).splitlines()[0]}); use a "
                              f"new --output-dir") from None
    optimizer.load_state_dict(checkpoint["optimizer"])
    if checkpoint["scaler"] and scaler.is_enabled():  # a disabled scaler (fp32, bf16) saves an empty state
        scaler.load_state_dict(checkpoint["scaler"])
    state = TrainingState(**checkpoint["state"])
    restore_rng(checkpoint["rng"], ranks, source, seed + state.step)
    return state


def restore_rng(saved, ranks, source, fallback_seed):
    """Each rank takes back its own RNG state; with another number of processes than saved, fresh seeds (the data
    order does not depend on them, only dropout does)."""
    if len(saved) == ranks.world_size:
        restore_rng_state(saved[ranks.rank])
        return
    log.warning(f"{source} holds the RNG states of {len(saved)} processes and this run has {ranks.world_size}: "
                f"dropout draws fresh random numbers from here on")
    torch.manual_seed(fallback_seed * 1000 + ranks.rank)


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
