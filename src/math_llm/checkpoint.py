"""Checkpoints: what a run saves and how it gets it back. Atomic writes, the last few kept, the newest readable one
found; a format version in every file (an unknown one is refused in one line); the typed training state; RNG state
captured and restored.

Everything is stored as tensors and primitives, so `torch.load(weights_only=True)` reads it and no file can run code.
"""

import json
import logging
import math
import os
import pickle
import random
import re
from dataclasses import asdict, dataclass, field

import numpy as np
import safetensors
import safetensors.torch
import torch

from math_llm.errors import CheckpointError, ConfigError
from math_llm.files import atomic_open, temp_path_beside
from math_llm.formats import data_format
from math_llm.model import ModelConfig, Transformer
from math_llm.probe import RunningSumProbe
from math_llm.tokenizer import Tokenizer
from math_llm.trained_model import TrainedModel

FORMAT_VERSION = 1  # raised whenever what a checkpoint holds changes
ANSI_FORMATTING = re.compile(r"\x1b\[[0-9;]*m")  # bold and reset, in torch's weights-only message
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")
BEST_MODEL = "best_model.pt"
FINAL_MODEL_FILE = "pytorch_model.bin"  # the final weights alone
SAFETENSORS_FILE = "model.safetensors"  # the same, with what rebuilds the model in its metadata
TRAINING_CONFIG_FILE = "training_config.json"
TRAINER_STATE_FILE = "trainer_state.json"
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
    decay_from: tuple | None = None  # (step, learning rate) of the last change of --num-epochs (learning_rate_at)
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
    remember_whole(path)


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
    """Deletes all but the newest `keep` readable checkpoints: an unreadable one is never counted among them (so
    the readable ones it would displace are kept), and is left in place for a look."""
    kept = 0
    for _, path in reversed(list_checkpoints(output_dir)):
        if kept >= keep:
            os.remove(path)
        elif is_whole(path):
            kept += 1


# Checkpoints known to load, by path: (size, mtime) when this process wrote or read them, so that pruning after
# every save reads no file twice
known_whole = {}


def remember_whole(path):
    status = os.stat(path)
    known_whole[path] = (status.st_size, status.st_mtime_ns)


def is_whole(path):
    """Whether the training checkpoint at `path` loads and passes the checks of load_checkpoint."""
    status = os.stat(path)
    if known_whole.get(path) == (status.st_size, status.st_mtime_ns):
        return True
    try:
        load_checkpoint(path, TRAINING_KEYS)
    except CheckpointError as error:
        log.warning(f"{error}; not counted among the checkpoints kept")
        return False
    remember_whole(path)
    return True


def load_checkpoint(path, required=MODEL_KEYS, weights_alone_allowed=False):
    """The checkpoint at `path` as a dict, with its format version and the `required` keys checked; with
    `weights_alone_allowed`, a state dict alone (a run's pytorch_model.bin) is returned as it is."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        cause = unpickling_cause(str(error))
        if "GLOBAL" in cause:  # the pickle names a function or class to call: what runs code
            raise CheckpointError(f"{path}: refused: loading it would run code or build objects that a Math LLM "
                                  f"checkpoint never holds ({cause}); do not load it unless you trust its "
                                  f"source") from None
        raise CheckpointError(f"{path}: unreadable checkpoint, truncated or corrupt (UnpicklingError: "
                              f"{cause})") from None
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path}: unreadable checkpoint, truncated or corrupt ({type(error).__name__}: "
                              f"{one_line(str(error)) or 'no details'})") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: not a Math LLM checkpoint (holds a {type(checkpoint).__name__}, not a dict)")
    version = checkpoint.get("format_version")
    if version is None and weights_alone_allowed and checkpoint and all(
            isinstance(value, torch.Tensor) for value in checkpoint.values()):
        return checkpoint
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
    if problem := contents_problem(checkpoint, training="state" in required):
        raise CheckpointError(f"{path}: incomplete or damaged checkpoint ({problem})")
    return checkpoint


def contents_problem(checkpoint, training):
    """What makes a checkpoint with the right keys unusable, or None: configs that build no model, weights (or probe
    weights) that do not fit the model its config builds, a vocabulary or format this code cannot read, and for a
    training checkpoint a state, optimizer or RNG state that cannot be restored. Checked on an empty (meta-device)
    model, so a checkpoint is rejected before anything of it is used, and the previous one can take its place."""
    try:
        config = ModelConfig(**checkpoint["train_config"]["model"])
        with torch.device("meta"):
            model = Transformer(config)
        Tokenizer(checkpoint["vocab"])
        data_format(checkpoint["data_format"])
    except (TypeError, ValueError, KeyError) as error:
        return f"its configs make no model: {type(error).__name__}: {error}"
    if config.vocab_size != len(checkpoint["vocab"]):
        return f"its model has {config.vocab_size} tokens but its vocabulary {len(checkpoint['vocab'])}"
    probe = RunningSumProbe(config.hidden_size) if checkpoint["probe"] is not None else None
    problem = weights_problem(model.state_dict(), checkpoint["model"], "model")
    problem = problem or (probe and weights_problem(probe.state_dict(), checkpoint["probe"], "probe"))
    if problem or not training:
        return problem
    try:
        TrainingState(**checkpoint["state"])
    except TypeError as error:
        return f"its training state: {error}"
    module_parameters = list(model.parameters()) + (list(probe.parameters()) if probe else [])
    return optimizer_problem(checkpoint["optimizer"], module_parameters) or rng_problem(checkpoint["rng"])


def weights_problem(expected, saved, name):
    """How the `saved` state dict fails to fit `expected` (names and shapes), or None."""
    if not isinstance(saved, dict):
        return f"its {name} weights are a {type(saved).__name__}, not a state dict"
    if missing := expected.keys() - saved.keys():
        return f"its {name} weights lack {', '.join(sorted(missing)[:3])}"
    if unexpected := saved.keys() - expected.keys():
        return f"its {name} weights hold unknown {', '.join(sorted(unexpected)[:3])}"
    for key, tensor in expected.items():
        if not isinstance(saved[key], torch.Tensor) or saved[key].shape != tensor.shape:
            shape = tuple(saved[key].shape) if isinstance(saved[key], torch.Tensor) else type(saved[key]).__name__
            return f"its {name} weight {key} has shape {shape}, the model needs {tuple(tensor.shape)}"
    return None


def optimizer_problem(saved, parameters):
    """How an AdamW state fails to fit the parameters (in the order build_optimizer groups them), or None."""
    ordered = [p for p in parameters if p.dim() >= 2] + [p for p in parameters if p.dim() < 2]
    try:
        counts = [len(group["params"]) for group in saved["param_groups"]]
        if sum(counts) != len(ordered):
            return f"its optimizer holds {sum(counts)} parameters, the model has {len(ordered)}"
        for index, state in saved["state"].items():
            if not (isinstance(index, int) and 0 <= index < len(ordered)) or any(
                    state[moment].shape != ordered[index].shape for moment in ("exp_avg", "exp_avg_sq")):
                return f"its optimizer state of parameter {index!r} does not fit the model"
    except (TypeError, KeyError, AttributeError) as error:
        return f"its optimizer state is malformed ({type(error).__name__}: {error})"
    return None


def rng_problem(saved):
    needed = {"python", "numpy", "torch", "cuda"}
    if not isinstance(saved, list) or not saved or not all(isinstance(s, dict) and needed <= s.keys() for s in saved):
        return "its RNG states are malformed"
    return None


def one_line(text, limit=300):
    """The first line of an error message as plain text: torch's own formatting codes dropped, and any other control
    character (a crafted file's names may hold terminal escape codes) written as an escape, so none acts on a
    terminal."""
    first = (ANSI_FORMATTING.sub("", text).strip().splitlines() or [""])[0]
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in first)[:limit]


def unpickling_cause(message):
    """What torch's weights-only unpickler refused, from its message: the line that names it ('Unsupported global:
    GLOBAL argparse.Namespace was not an allowed global...', 'Trying to load unsupported GLOBAL posix.system...'),
    not the advice around it (which suggests loading with weights_only=False)."""
    message = message.replace("WeightsUnpickler error: ", "\n")
    causes = [line for line in message.splitlines() if "GLOBAL" in line or "Unsupported" in line]
    return one_line((causes[0] if causes else message).split(" Please use")[0])  # not how to allow it


def load_latest_checkpoint(output_dir, check=None):
    """The newest usable training checkpoint as (checkpoint, path), skipping unusable ones with a warning; None if
    there are none. If every one is unusable, that is an error: starting over would overwrite the run. `check`:
    (checkpoint, path) -> raises a UserError for one whose settings the caller cannot use."""
    checkpoints = list_checkpoints(output_dir)
    for _, path in reversed(checkpoints):
        try:
            checkpoint = load_checkpoint(path, TRAINING_KEYS)
            if check is not None:
                check(checkpoint, path)
            remember_whole(path)
            return checkpoint, path
        except (CheckpointError, ConfigError) as error:
            log.warning(f"{error}; trying the previous checkpoint")
    if checkpoints:
        raise CheckpointError(f"{output_dir}: none of its {len(checkpoints)} checkpoints is readable; move them "
                              f"away to start this run over")
    return None


def load_model(path, device):
    """The TrainedModel, in eval mode, of best_model.pt, a checkpoint-N.pt, a run's final weights (model.safetensors,
    or pytorch_model.bin with the training_config.json beside it), or an output dir (its best_model.pt, else its
    newest readable checkpoint)."""
    if path.endswith(".safetensors"):
        return load_safetensors(path, device)
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, BEST_MODEL)):
        found = load_latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"{path}: no {BEST_MODEL} or checkpoint-N.pt in this directory")
        checkpoint, path = found
    else:
        path = os.path.join(path, BEST_MODEL) if os.path.isdir(path) else path
        checkpoint = load_checkpoint(path, weights_alone_allowed=True)
        if "format_version" not in checkpoint:  # a run's final weights: its config is beside them
            return build_trained(run_description(path), checkpoint, None, path, device)
    step = checkpoint["step"] if "step" in checkpoint else checkpoint["state"]["step"]
    description = {**{key: checkpoint[key] for key in MODEL_KEYS - {"model", "probe"}}, "step": step}
    return build_trained(description, checkpoint["model"], checkpoint["probe"], path, device)


def build_trained(description, weights, probe_weights, source, device):
    """The TrainedModel that `description` (train_config, vocab, data_format, operand_width, data_config and step,
    as a checkpoint or training_config.json records them) builds, with `weights` (a state dict, or a function that
    loads them into a model) and its probe's."""
    try:
        config = ModelConfig(**description["train_config"]["model"])
        model = Transformer(config)
        if callable(weights):
            weights(model)
        else:
            model.load_state_dict(weights)
        probe = None
        if probe_weights is not None:
            probe = RunningSumProbe(config.hidden_size)
            probe.load_state_dict(probe_weights)
        return TrainedModel(model.to(device).eval(), Tokenizer(description["vocab"]),
                            data_format(description["data_format"]), description["operand_width"],
                            description["data_config"], probe.to(device) if probe else None, source,
                            description.get("step"), description["train_config"].get("data_dir"))
    except (TypeError, ValueError, KeyError, RuntimeError) as error:
        raise CheckpointError(f"{source}: its configs and weights do not make a model "
                              f"({one_line(str(error))})") from None


def run_description(weights_path):
    """What a model needs besides its weights, for a run's final weights file: from the training_config.json beside
    it (and the step from trainer_state.json)."""
    directory = os.path.dirname(weights_path) or "."
    config_path = os.path.join(directory, TRAINING_CONFIG_FILE)
    try:
        with open(config_path) as f:
            description = json.load(f)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{weights_path}: weights alone, and the {TRAINING_CONFIG_FILE} that describes their model "
                              f"is not readable beside them ({one_line(str(error))}); give best_model.pt or "
                              f"checkpoint-N.pt of the run instead") from None
    try:
        with open(os.path.join(directory, TRAINER_STATE_FILE)) as f:
            description["step"] = json.load(f)["step"]
    except (OSError, ValueError, KeyError, TypeError) as error:  # the step is for messages only: go on without
        log.warning(f"{weights_path}: no step read from the {TRAINER_STATE_FILE} beside it ({one_line(str(error))})")
    return description


def save_final_weights(output_dir, train_config, trained, step):
    """The run's final weights, twice: pytorch_model.bin (a state dict, as the seed's interface has it) and
    model.safetensors, the format model hubs expect, which cannot run code when loaded and carries in its metadata
    everything needed to rebuild the model (so it stands alone)."""
    save_atomic(trained.model.state_dict(), os.path.join(output_dir, FINAL_MODEL_FILE))
    metadata = {"format_version": str(FORMAT_VERSION), "step": str(step),
                **{key: json.dumps(value) for key, value in
                   {"train_config": asdict(train_config), **trained.description()}.items()}}
    path = os.path.join(output_dir, SAFETENSORS_FILE)
    temp_path = temp_path_beside(path)
    try:
        safetensors.torch.save_model(trained.model, temp_path, metadata)  # drops the tied lm_head copy
        os.replace(temp_path, path)
    finally:
        if os.path.exists(temp_path):
            os.remove(temp_path)


def load_safetensors(path, device):
    try:
        with safetensors.safe_open(path, "pt") as f:
            metadata = f.metadata() or {}
    except (OSError, safetensors.SafetensorError) as error:
        raise CheckpointError(f"{path}: unreadable safetensors file ({one_line(str(error))})") from None
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(f"{path}: not a Math LLM model of format {FORMAT_VERSION} (its metadata says format "
                              f"{metadata.get('format_version')!r})")
    try:
        description = {key: json.loads(metadata[key]) for key in
                       ("train_config", "vocab", "data_format", "operand_width", "data_config", "step")}
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: damaged metadata ({one_line(str(error))})") from None
    return build_trained(description, lambda model: safetensors.torch.load_model(model, path), None, path, device)


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
        raise CheckpointError(f"{source}: its weights do not fit the model ({one_line(str(error))}); use a "
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
