"""The training loop shared by every entry point: setup, data, model, optimizer, then steps with eval/save/log.

Resuming is re-entering this loop at the step stored in the newest checkpoint: the batch order of every epoch is a
pure function of (seed, epoch), so a step number says exactly which batches were already seen.
"""

import contextlib
import json
import logging
import math
import os
import random
import signal
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from tqdm import tqdm
from torch.nn.parallel import DistributedDataParallel
from tqdm.contrib.logging import logging_redirect_tqdm

from src import checkpoint as ckpt
from src.data import SPLITS, DataConfig, generate_splits, load_splits, split_path, write_splits
from src.edge_cases import edge_case_datasets
from src.errors import CheckpointError, ConfigError, DataError, TrainingDiverged
from src.evaluation import (evaluate, evaluate_edge_cases, log_report, pooled_rmse, running_sum_readout,
                            scalar_metrics)
from src.files import write_json
from src.distributed import Ranks, all_gather_objects, all_reduce_sum, barrier, setup_distributed
from src.model import POS_ENCODINGS, ModelConfig, Transformer, build_model_config, longest_digit_place
from src.plots import save_grid_heatmap
from src.problems import operands_reversed
from src.runtime import autocast, select_precision, synchronize
from src.tokenizer import Tokenizer
from src.tracking import start_tracking

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    model_size: str = "small"
    max_length: int = 32
    dropout: float = 0.0
    pos_encoding: str = "learned"
    digit_positions: int = 128  # abacus only
    no_place_bias: bool = False  # abacus only
    running_sum_loss: float = 0.0  # weight of the running-sum probe's loss (multiplication); 0: none
    batch_size: int = 32  # per process
    gradient_accumulation_steps: int = 1
    eval_batch_size: int = 64
    group_by_length: bool = False
    learning_rate: float = 1e-4
    min_learning_rate_ratio: float = 0.1
    weight_decay: float = 0.01
    num_epochs: int = 10
    warmup_steps: int = 500
    max_grad_norm: float = 1.0
    data_dir: str = "data"
    output_dir: str = "checkpoints"
    num_workers: int = 4
    save_steps: int = 1000
    eval_steps: int = 1000
    logging_steps: int = 100
    keep_checkpoints: int = 3
    fp16: bool = False
    bf16: bool = False
    compile: bool = False
    no_wandb: bool = False
    wandb_project: str = "math-llm"
    device: str = "auto"
    seed: int = 42

    def __post_init__(self):
        at_least_one = ["max_length", "batch_size", "gradient_accumulation_steps", "eval_batch_size", "num_epochs",
                        "save_steps", "eval_steps",
                        "logging_steps", "keep_checkpoints"]
        problems = [f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}"
                    for name in at_least_one if getattr(self, name) < 1]
        if not 0 <= self.dropout < 1:
            problems.append(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.min_learning_rate_ratio <= 1:
            problems.append(f"--min-learning-rate-ratio must be in [0, 1], got {self.min_learning_rate_ratio}")
        if not (math.isfinite(self.running_sum_loss) and self.running_sum_loss >= 0):
            problems.append(f"--running-sum-loss must be a number >= 0, got {self.running_sum_loss}")
        if self.learning_rate <= 0 or self.max_grad_norm <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            problems.append("--learning-rate and --max-grad-norm must be positive, --weight-decay and "
                            "--warmup-steps not negative")
        if self.pos_encoding not in POS_ENCODINGS:
            problems.append(f"--pos-encoding must be one of {', '.join(POS_ENCODINGS)}, got {self.pos_encoding!r}")
        if self.no_place_bias and self.pos_encoding != "abacus":
            problems.append("--no-place-bias applies to --pos-encoding abacus only")
        if self.digit_positions < 2:
            problems.append(f"--digit-positions must be at least 2, got {self.digit_positions}")
        if self.fp16 and self.bf16:
            problems.append("--fp16 and --bf16 exclude each other: choose one")
        if problems:
            raise ConfigError("; ".join(problems))


# Settings that may differ when a run is resumed: they change how it is watched, not what it computes.
RESUMABLE_OVERRIDES = {"output_dir", "num_workers", "save_steps", "eval_steps", "logging_steps", "keep_checkpoints",
                       "no_wandb", "wandb_project", "device", "eval_batch_size", "compile"}
TRAINING_CONFIG_FILE = "training_config.json"
FINAL_MODEL_FILE = "pytorch_model.bin"
TEST_RESULTS_FILE = "test_results.json"
TEST_HEATMAP_FILE = "test_heatmap.png"
TRAINER_STATE_FILE = "trainer_state.json"


def warmup_steps_for(config, total_steps):
    """The warmup, capped at half the run so that a short run still decays."""
    return min(config.warmup_steps, total_steps // 2)


def learning_rate_at(step, config, total_steps, warmup=None):
    """Linear warmup to the peak, then cosine decay to min_learning_rate_ratio x peak at the last step. `warmup`
    is fixed when a run starts, so a resume with another global batch (and so another total) does not warm up anew."""
    peak = config.learning_rate
    warmup = warmup_steps_for(config, total_steps) if warmup is None else warmup
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    floor = peak * config.min_learning_rate_ratio
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(progress, 1.0)))


LENGTH_GROUP_BATCHES = 64  # --group-by-length sorts runs of this many batches


def epoch_order(num_examples, seed, epoch, lengths=None, batch_size=None):
    """The shuffled example order of one epoch, a pure function of (seed, epoch). Given `lengths`, each run of
    LENGTH_GROUP_BATCHES x batch_size examples of it is sorted longest first, so that a batch holds examples of
    similar length and pads little (a step is cut from consecutive examples; see step_batches)."""
    order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    if lengths is None:
        return order
    runs = order.split(LENGTH_GROUP_BATCHES * batch_size)
    return torch.cat([run[lengths[run].argsort(descending=True, stable=True)] for run in runs])


def step_batches(dataset, order, batch_size, ranks=Ranks(), accumulation_steps=1, first_example=0):
    """The optimizer steps of one epoch, from example `first_example` of its order on: for each step, this rank's
    micro-batches [(inputs, targets, running sums, weight)] and the number of examples the whole step covers.

    A step takes the next batch_size x world_size x accumulation_steps examples of the order (every rank computes
    the same order) and cuts them into that many equal parts: part k x world_size + rank is this rank's micro-step
    k, so the ranks together see each example once per epoch. An epoch's last, shorter step is cut as evenly as it
    goes. `weight` is the part's share of the step's answer tokens times the world size: a micro-batch's mean loss
    times its weight, summed and averaged by DDP, is the mean over all answer tokens of the global batch, whatever
    the masks. A rank left with no example takes one with weight 0, so that it still joins the all-reduce.

    A batch is an index into tensors already on the training device, so it costs microseconds in this process
    (worker processes would only add copies between processes); the order goes to the device once per epoch."""
    parts = ranks.world_size * accumulation_steps
    device_order = order.to(dataset.tokens.device)
    answer_tokens = dataset.lengths - dataset.prompt_lengths
    for start in range(first_example, len(order), batch_size * parts):
        positions = torch.arange(start, min(start + batch_size * parts, len(order)))
        step_answer_tokens = float(answer_tokens[order[positions]].sum())
        micro_batches = []
        for micro_step in range(accumulation_steps):
            part = torch.tensor_split(positions, parts)[micro_step * ranks.world_size + ranks.rank]
            weight = ranks.world_size * float(answer_tokens[order[part]].sum()) / step_answer_tokens
            if len(part) == 0:
                part, weight = positions[:1], 0.0
            micro_batches.append((*dataset.batch(order[part], device_order[part]), weight))
        yield micro_batches, len(positions)


def steps_remaining(examples_seen, num_examples, num_epochs, examples_per_step):
    """Optimizer steps left in a run that has consumed `examples_seen` examples (all epochs together)."""
    epoch, position = divmod(examples_seen, num_examples)
    if epoch >= num_epochs:
        return 0
    return (math.ceil((num_examples - position) / examples_per_step)
            + (num_epochs - epoch - 1) * math.ceil(num_examples / examples_per_step))


class TrainingClock:
    """Seconds spent in training steps: paused around evaluation and checkpointing, synchronised on CUDA."""

    def __init__(self, device, seconds=0.0):
        self.device, self.seconds = device, seconds
        self.started = time.perf_counter()

    def read(self):
        synchronize(self.device)
        now = time.perf_counter()
        self.seconds += now - self.started
        self.started = now
        return self.seconds

    def restart(self):
        self.started = time.perf_counter()


class StopRequest:
    """SIGINT/SIGTERM ask the loop to save and stop after the current step; a second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, _frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.warning(f"{signal.Signals(signum).name} received: saving a checkpoint after this step, then stopping "
                    f"(Ctrl-C again to stop without saving)")

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------------------------------------------------
# Setup

def resolve_config(config, explicit_flags, saved_config, source):
    """On resume, the saved config wins; explicitly given flags may only change how the run is watched."""
    if saved_config is None:
        return config
    saved = TrainConfig(**{f.name: saved_config[f.name] for f in fields(TrainConfig) if f.name in saved_config})
    conflicts = [f"--{key.replace('_', '-')} {getattr(config, key)!r} (run has {getattr(saved, key)!r})"
                 for key in sorted(explicit_flags)
                 if key not in RESUMABLE_OVERRIDES and getattr(config, key) != getattr(saved, key)]
    if conflicts:
        raise ConfigError(f"{source}: cannot resume with different settings: {', '.join(conflicts)}. "
                          f"Drop these flags to resume, or choose a new --output-dir")
    for key in explicit_flags & RESUMABLE_OVERRIDES:
        setattr(saved, key, getattr(config, key))
    return saved


def ensure_dataset(data_dir, seed, ranks=Ranks()):
    """A missing dataset is generated with the defaults; a partial one is an error (never silently replaced).
    Under torchrun rank 0 writes it (the data dir is on a filesystem all nodes share) and the rest wait."""
    missing = [split for split in SPLITS if not os.path.exists(split_path(data_dir, split))]
    if 0 < len(missing) < len(SPLITS):  # every rank says so, rather than the others blaming a lost peer
        raise DataError(f"{data_dir}: missing {', '.join(split_path(data_dir, s) for s in missing)} "
                        f"(regenerate all splits with scripts/generate_data.py --output-dir {data_dir})")
    if not missing or not ranks.is_main:
        barrier()
        return
    data_config = DataConfig(seed=seed)
    log.info(f"no dataset in {data_dir}/: generating the default one ({data_config})")
    write_splits(data_dir, generate_splits(data_config, log), data_config)
    barrier()


def build_optimizer(model, config, device):
    """AdamW, decaying matrices and embeddings but not biases or LayerNorm gains (as nanoGPT)."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in parameters if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0},
    ]
    # Fused: one kernel over all parameters instead of a dozen small ops per tensor (CPU and CUDA alike).
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.95), fused=True)


def compile_for_training(model):
    """torch.compile with static shapes: each distinct batch shape compiles once (dynamic shapes measured slower
    on CPU, README Speed). The returned module shares the model's parameters."""
    return torch.compile(model, dynamic=False)


def train_step(model, optimizer, scaler, micro_batches, learning_rate, config, device, precision):
    """One optimizer step over this rank's micro-batches (see `step_batches`); under DDP the gradient all-reduce
    runs on the last micro-batch only. Returns this rank's share of the global batch's mean loss (summed over the
    ranks and divided by the world size, it is that loss) and the gradient norm before clipping, as device tensors
    (no host sync)."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
    loss_share = torch.zeros((), device=device)
    for index, (inputs, targets, running_sums, weight) in enumerate(micro_batches):
        accumulating = isinstance(model, DistributedDataParallel) and index < len(micro_batches) - 1
        with model.no_sync() if accumulating else contextlib.nullcontext():
            with autocast(device, precision):
                _, loss = model(inputs, targets, running_sums=running_sums)
            scaler.scale(loss * weight).backward()
        loss_share += loss.detach() * weight
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss_share, grad_norm


# ---------------------------------------------------------------------------------------------------------------
# Side jobs of the loop

def save_training_checkpoint(state, config, rng_states):
    """`rng_states`: every rank's RNG state, in rank order (only rank 0 calls this)."""
    path = ckpt.checkpoint_path(config.output_dir, state["step"])
    ckpt.save_atomic({**state, "rng": rng_states}, path)
    ckpt.remove_old_checkpoints(config.output_dir, config.keep_checkpoints)
    log.info(f"saved {path}")


def improves_on_best(metrics, state):
    """A higher val exact match, or the same one with a lower val loss: so a run whose evaluations tie (all at 0% on
    a task not yet learned, all at 100% on one learned early) keeps its best-fitting model, not its first."""
    return (metrics["exact_match"], -metrics["loss"]) > (state["best_exact_match"], -state["best_loss"])


def save_best_model(model, state, metrics, config):
    path = os.path.join(config.output_dir, ckpt.BEST_MODEL)
    ckpt.save_atomic({"model": model.state_dict(), "model_config": state["model_config"],
                      "train_config": state["train_config"], "vocab": state["vocab"], "step": state["step"],
                      "data_format": state["data_format"], "operand_width": state["operand_width"],
                      "data_config": state["data_config"],
                      "val_metrics": {k: v for k, v in metrics.items() if k != "mistakes"}}, path)
    log.info(f"new best val exact match {metrics['exact_match']:.4f} (loss {metrics['loss']:.4f}): saved {path}")


def run_evaluation(model, dataset, edge_sets, tokenizer, config, device, precision, split):
    """The split's metrics and those of the data's edge cases."""
    start = time.perf_counter()
    metrics = evaluate(model, dataset, tokenizer, config.eval_batch_size, device, precision)
    metrics["edge_cases"] = evaluate_edge_cases(model, edge_sets, tokenizer, config.eval_batch_size, device, precision)
    if dataset.running_sums is not None:
        metrics["running_sum_probe"] = running_sum_readout(model, dataset, config.eval_batch_size, device, precision)
    metrics["seconds"] = time.perf_counter() - start
    probe = f" | probe rmse {pooled_rmse(metrics['running_sum_probe']):.2f}" if "running_sum_probe" in metrics else ""
    log.info(f"{split}: exact match {metrics['exact_match']:.4f} | token accuracy {metrics['token_accuracy']:.4f} "
             f"| loss {metrics['loss']:.4f}{probe} ({metrics['num_examples']} problems in {metrics['seconds']:.2f} s)")
    if split == "test":
        log_report(metrics, log, split)
    else:
        for mistake in metrics["mistakes"][:3]:
            log.info(f"  {split} mistake: {mistake['prompt']}{mistake['predicted']} (expected {mistake['expected']})")
    return metrics


def in_history(metric):
    """What trainer_state.json keeps of each val evaluation: the totals, each operation, the edge cases and the
    probe's RMSE (the per-cell, per-carry and per-place figures are many; W&B has them)."""
    return not metric.startswith(("val/by_digits/", "val/by_carries/", "val/by_operands/", "val/by_length/",
                                  "val/digit_accuracy/", "val/running_sum_probe/rmse/"))


def write_trainer_state(state, config, total_steps):
    """trainer_state.json (as in HF's Trainer): where the run is, and every logged metric so far, with the seconds
    of training steps behind it (e.g. the time to reach an accuracy)."""
    write_json(os.path.join(config.output_dir, TRAINER_STATE_FILE),
               {"step": state["step"], "total_steps": total_steps, "best_val_exact_match": state["best_exact_match"],
                "best_val_loss": state["best_loss"] if math.isfinite(state["best_loss"]) else None,  # none known
                "training_seconds": state["training_seconds"], "evaluation_seconds": state["evaluation_seconds"],
                "log_history": state["log_history"]})


def restore_rng(saved, ranks, source, fallback_seed):
    """Each rank takes back its own RNG state; with another number of processes than saved, fresh seeds (the data
    order does not depend on them, only dropout does)."""
    states = saved if isinstance(saved, list) else [saved]  # single-process checkpoints hold one state
    if len(states) == ranks.world_size:
        ckpt.restore_rng_state(states[ranks.rank])
        return
    log.warning(f"{source} holds the RNG states of {len(states)} processes and this run has {ranks.world_size}: "
                f"dropout draws fresh random numbers from here on")
    torch.manual_seed(fallback_seed * 1000 + ranks.rank)


def examples_seen_at(step, num_examples, batch_size):
    """Examples consumed after `step` single-process steps of `batch_size` (each epoch ends with a short batch)."""
    steps_per_epoch = math.ceil(num_examples / batch_size)
    epoch, step_in_epoch = divmod(step, steps_per_epoch)
    return epoch * num_examples + min(step_in_epoch * batch_size, num_examples)


def stop_requested_anywhere(stop, ranks, device):
    """A Ctrl-C or SIGTERM seen by any rank stops all of them after the same step (one tiny all-reduce per step,
    only under torchrun): a rank that stopped alone would leave the others waiting in the next all-reduce."""
    if not ranks.distributed:
        return stop.requested
    return all_reduce_sum(torch.tensor(float(stop.requested), device=device)).item() > 0


def check_digit_places(datasets, config):
    """The abacus encoding needs a place for every digit of the data, and room above it for the random offsets
    that train the places of longer numbers; its counting follows the number from its first digit, which is the
    least significant only in the operand-reversed formats."""
    if config.pos_encoding != "abacus":
        return
    longest = max(longest_digit_place(dataset.tokens) for dataset in datasets.values())
    if longest >= config.digit_positions:
        raise ConfigError(f"{config.data_dir}: its numbers reach digit place {longest} but --digit-positions is "
                          f"{config.digit_positions}; raise it above {longest} (well above, to generalise longer)")
    data_format = datasets["train"].format
    if not operands_reversed(data_format):
        log.warning(f"--pos-encoding abacus counts digit places from each number's first digit, and the "
                    f"{data_format!r} format writes operands most significant digit first, so places do not align "
                    f"columns; generate the data with --format reversed-all for length generalisation")


def check_finite(value, step):
    if not math.isfinite(value):
        raise TrainingDiverged(f"loss became {value} by step {step}; stopping without saving this model. "
                               f"Train again in a new --output-dir with a lower --learning-rate (or without --fp16)")
    return value


def format_duration(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"


# ---------------------------------------------------------------------------------------------------------------
# The run

def train(config, explicit_flags=frozenset()):
    """Trains (or resumes) the run in config.output_dir and writes its final outputs. Returns the test metrics.
    Under torchrun every process runs this; rank 0 alone writes files, logs and W&B."""
    os.makedirs(config.output_dir, exist_ok=True)
    checkpoint, checkpoint_source = ckpt.load_latest_checkpoint(config.output_dir, log) or (None, None)
    config_path = os.path.join(config.output_dir, TRAINING_CONFIG_FILE)
    if checkpoint:
        config = resolve_config(config, explicit_flags, checkpoint["train_config"], checkpoint_source)
    elif os.path.exists(config_path):  # a run stopped before its first checkpoint: restart it with its own config
        with open(config_path) as f:
            config = resolve_config(config, explicit_flags, json.load(f)["train_config"], config_path)

    ranks, device = setup_distributed(config.device)
    precision = select_precision(device, config.fp16, config.bf16)

    # Data: tokenised once, kept on the training device
    ensure_dataset(config.data_dir, config.seed, ranks)
    datasets, tokenizer = load_splits(config.data_dir, config.max_length,
                                      Tokenizer(checkpoint["vocab"]) if checkpoint else None)
    for dataset in datasets.values():
        dataset.to(device)
    data_format = datasets["train"].format
    check_digit_places(datasets, config)
    if config.running_sum_loss:
        with_sums = datasets["train"].add_running_sums()
        if not with_sums:
            raise ConfigError(f"--running-sum-loss: {split_path(config.data_dir, 'train')} has no two-operand "
                              f"multiplication, the only problems with running sums")
        log.info(f"running-sum probe: {with_sums} of {len(datasets['train'])} training problems have running sums")
        for split in ("val", "test"):  # the probe's readings are evaluated with the rest (run_evaluation)
            datasets[split].add_running_sums()
    num_train = len(datasets["train"])
    examples_per_step = config.batch_size * ranks.world_size * config.gradient_accumulation_steps

    # Model, optimizer
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    model_config = build_model_config(config.model_size, len(tokenizer), config.max_length, config.dropout,
                                      config.pos_encoding, config.digit_positions, not config.no_place_bias,
                                      config.running_sum_loss)
    model = Transformer(model_config).to(device)
    edge_sets = edge_case_datasets(datasets["val"], tokenizer, config.max_length, model.digit_place_limit)
    if ranks.distributed:  # the same initial weights everywhere (DDP checks), different dropout masks per rank
        torch.manual_seed(config.seed * 1000 + ranks.rank)
    optimizer = build_optimizer(model, config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_grad_scaler)
    state = {"step": 0, "examples_seen": 0, "best_exact_match": -1.0, "best_loss": math.inf,
             "train_config": asdict(config), "model_config": asdict(model_config),
             "vocab": tokenizer.vocab, "data_format": data_format, "operand_width": datasets["train"].operand_width,
             "data_config": {k: v for k, v in datasets["train"].metadata.items() if k != "split"},
             "train_data_fingerprint": datasets["train"].fingerprint(),
             "precision": precision.description, "training_seconds": 0.0, "evaluation_seconds": 0.0,
             "log_history": []}
    if checkpoint:
        if asdict(ModelConfig(**checkpoint["model_config"])) != state["model_config"]:  # older ones lack keys
            raise ConfigError(f"{checkpoint_source}: model config {checkpoint['model_config']} does not match "
                              f"{state['model_config']}")
        if checkpoint["train_data_fingerprint"] != state["train_data_fingerprint"]:
            raise ConfigError(f"{checkpoint_source}: {split_path(config.data_dir, 'train')} changed since this run "
                              f"started, so its position in the data is lost; restore that data or use a new --output-dir")
        if checkpoint["precision"] != precision.description:
            log.warning(f"{checkpoint_source} was trained with {checkpoint['precision']} and resumes with "
                        f"{precision.description}: it continues, but will not match an uninterrupted run exactly")
        try:
            model.load_state_dict(checkpoint["model"])
        except RuntimeError as error:  # weights of another shape or encoding under the same config
            raise CheckpointError(f"{checkpoint_source}: its weights do not fit the model "
                                  f"({str(error).splitlines()[0]}); use a new --output-dir") from None
        optimizer.load_state_dict(checkpoint["optimizer"])
        for group in optimizer.param_groups:  # loading restores the saved flags too; older checkpoints lack fused
            group["fused"] = optimizer.defaults["fused"]
        if checkpoint["scaler"] and scaler.is_enabled():  # a disabled scaler (fp32, bf16) saves an empty state
            scaler.load_state_dict(checkpoint["scaler"])
        restore_rng(checkpoint["rng"], ranks, checkpoint_source, config.seed + checkpoint["step"])
        state.update({key: checkpoint[key] for key in ("step", "best_exact_match", "training_seconds",
                                                       "evaluation_seconds", "log_history") if key in checkpoint})
        # Checkpoints before the loss tie-break lack best_loss: -inf keeps their rule, no tie replaces the best.
        state["best_loss"] = checkpoint.get("best_loss", -math.inf)
        # Checkpoints before data parallelism counted only steps, of one process's batch.
        state["examples_seen"] = checkpoint.get("examples_seen", examples_seen_at(state["step"], num_train,
                                                                                  config.batch_size))
        if "log_history" not in checkpoint:
            log.warning(f"{checkpoint_source} predates the training clock: {TRAINER_STATE_FILE} counts training "
                        f"time and history from this resume on, not from the start of the run")
    total_steps = state["step"] + steps_remaining(state["examples_seen"], num_train, config.num_epochs,
                                                  examples_per_step)
    steps_per_epoch = math.ceil(num_train / examples_per_step)
    state["warmup"] = (checkpoint or {}).get("warmup", warmup_steps_for(config, total_steps))
    if checkpoint:
        log.info(f"resuming {checkpoint_source} at step {state['step']}/{total_steps} (example "
                 f"{state['examples_seen'] % num_train} of epoch {state['examples_seen'] // num_train + 1})")
    test_results_path = os.path.join(config.output_dir, TEST_RESULTS_FILE)
    if state["step"] >= total_steps and os.path.exists(test_results_path):
        log.info(f"{config.output_dir}: this run is already finished ({total_steps} steps); results are in "
                 f"{test_results_path}. Use a new --output-dir to train again")
        with open(test_results_path) as f:
            return json.load(f)
    if ranks.is_main:  # the layout of this (re)start: world size and global batch may differ from the last one
        write_json(config_path, {"train_config": asdict(config), "model_config": asdict(model_config),
                                 "num_parameters": model.num_parameters(), "vocab": tokenizer.vocab,
                                 "data_format": data_format, "data_config": state["data_config"],
                                 "train_examples": num_train,
                                 "world_size": ranks.world_size, "global_batch_size": examples_per_step,
                                 "steps_per_epoch": steps_per_epoch, "total_steps": total_steps})

    # The compiled model trains; the raw one (same parameters) is evaluated and saved, as nanoGPT/nanochat do.
    step_model = compile_for_training(model) if config.compile else model
    if ranks.distributed:
        # No buffer changes in training (the abacus codes are constant): nothing to broadcast before each step
        step_model = DistributedDataParallel(step_model, device_ids=[device.index] if device.type == "cuda" else None,
                                             broadcast_buffers=False)
    log.info(f"model {config.model_size}: {model.num_parameters():,} parameters | {config.num_epochs} epochs x "
             f"{steps_per_epoch} steps of global batch {examples_per_step} ({config.batch_size} per process x "
             f"{ranks.world_size} processes x {config.gradient_accumulation_steps} accumulation steps) = "
             f"{total_steps} steps | device {device} | precision {precision.description}"
             f"{' | torch.compile' if config.compile else ''}")
    log.info(f"data loading: batches are index slices of tensors already on {device}, taken in this process; "
             f"no worker processes are started (--num-workers {config.num_workers} has nothing to do here)")
    tracker = start_tracking(not config.no_wandb and ranks.is_main, config.wandb_project, config.output_dir,
                             {**asdict(config), "num_parameters": model.num_parameters()})

    # Loop
    model.train()
    step = state["step"]
    loss_sum = torch.zeros((), device=device)
    grad_norm_sum = torch.zeros((), device=device)
    clock = TrainingClock(device, state["training_seconds"])
    interval_steps = interval_tokens = 0
    interval_start = clock.seconds
    with StopRequest() as stop, logging_redirect_tqdm(), \
            tqdm(total=total_steps, initial=step, desc="training", unit="step", dynamic_ncols=True,
                 disable=None if ranks.is_main else True) as progress:  # None: a bar on a terminal only
        for epoch in range(state["examples_seen"] // num_train, config.num_epochs):
            order = epoch_order(num_train, config.seed, epoch,
                                *((datasets["train"].lengths, config.batch_size) if config.group_by_length else ()))
            for micro_batches, step_examples in step_batches(datasets["train"], order, config.batch_size, ranks,
                                                             config.gradient_accumulation_steps,
                                                             state["examples_seen"] - epoch * num_train):
                learning_rate = learning_rate_at(step, config, total_steps, state["warmup"])
                loss, grad_norm = train_step(step_model, optimizer, scaler, micro_batches, learning_rate, config,
                                             device, precision)
                step += 1
                state["step"] = step
                state["examples_seen"] += step_examples
                progress.update()
                loss_sum += loss
                grad_norm_sum += grad_norm
                interval_steps += 1
                interval_tokens += sum(inputs.numel() for inputs, *_ in micro_batches)
                stopping = stop_requested_anywhere(stop, ranks, device)

                if step % config.logging_steps == 0 or step == total_steps:
                    seconds = clock.read()
                    interval_loss, interval_tokens = all_reduce_sum(
                        torch.stack([loss_sum, torch.tensor(float(interval_tokens), device=device)])).tolist()
                    metrics = {"train/loss": check_finite(interval_loss / ranks.world_size, step) / interval_steps,
                               "train/learning_rate": learning_rate,
                               "train/grad_norm": grad_norm_sum.item() / interval_steps,
                               "train/tokens_per_second": interval_tokens / (seconds - interval_start),
                               "train/epoch": state["examples_seen"] / num_train,
                               "train/training_seconds": seconds}
                    eta = format_duration((total_steps - step) * (seconds - interval_start) / interval_steps)
                    log.info(f"step {step}/{total_steps} | epoch {metrics['train/epoch']:.2f} | "
                             f"loss {metrics['train/loss']:.4f} | lr {learning_rate:.2e} | "
                             f"grad norm {metrics['train/grad_norm']:.3f} | "
                             f"{metrics['train/tokens_per_second']:,.0f} tokens/s | "
                             f"ETA {eta}")
                    progress.set_postfix(loss=f"{metrics['train/loss']:.4f}")
                    tracker.log(metrics, step=step)
                    state["log_history"].append({"step": step, **metrics})
                    loss_sum.zero_()
                    grad_norm_sum.zero_()
                    interval_steps = interval_tokens = 0
                    interval_start = seconds

                evaluating = step % config.eval_steps == 0 or step == total_steps
                saving = step % config.save_steps == 0 or step == total_steps or stopping
                if evaluating or saving:
                    state["training_seconds"] = clock.read()  # evaluation and saving are not training time
                    if interval_steps:  # a diverged model is neither evaluated nor saved, on any rank
                        check_finite(all_reduce_sum(loss_sum.clone()).item(), step)
                if evaluating:
                    metrics = run_evaluation(model, datasets["val"], edge_sets, tokenizer, config, device, precision,
                                             "val")
                    check_finite(metrics["loss"], step)  # the last update can break weights after a finite loss
                    state["evaluation_seconds"] += metrics["seconds"]
                    val_metrics = {**scalar_metrics(metrics, "val"), "val/seconds": metrics["seconds"]}
                    tracker.log(val_metrics, step=step)
                    state["log_history"].append({"step": step, "train/training_seconds": state["training_seconds"],
                                                 **{k: v for k, v in val_metrics.items() if in_history(k)}})
                    if improves_on_best(metrics, state):
                        state["best_exact_match"], state["best_loss"] = metrics["exact_match"], metrics["loss"]
                        if ranks.is_main:
                            save_best_model(model, state, metrics, config)
                if saving:
                    rng_states = all_gather_objects(ckpt.capture_rng_state())
                    if ranks.is_main:
                        save_training_checkpoint({**state, "model": model.state_dict(),
                                                  "optimizer": optimizer.state_dict(),
                                                  "scaler": scaler.state_dict()}, config, rng_states)
                if evaluating or saving:
                    if ranks.is_main:
                        write_trainer_state(state, config, total_steps)
                    clock.restart()
                if stopping:
                    log.warning(f"stopped at step {step}/{total_steps}; run the same command to resume")
                    tracker.finish()
                    return None

    # End: final weights, then the best model (by val exact match) on the held-out test split, in fp32 whatever the
    # training precision (val ran under it, for speed): the figures evaluate.py reports by default, and a bf16 model
    # can score higher in fp32
    if ranks.is_main:
        ckpt.save_atomic(model.state_dict(), os.path.join(config.output_dir, FINAL_MODEL_FILE))
    barrier()  # best_model.pt is complete before any rank reads it
    best = ckpt.load_checkpoint(os.path.join(config.output_dir, ckpt.BEST_MODEL))
    model.load_state_dict(best["model"])
    test_metrics = run_evaluation(model, datasets["test"], edge_sets, tokenizer, config, device,
                                  select_precision(device), "test")
    test_metrics.update(model_file=ckpt.BEST_MODEL, model_step=best["step"])
    if ranks.is_main:
        write_json(test_results_path, test_metrics)
        heatmap = os.path.join(config.output_dir, TEST_HEATMAP_FILE)
        if save_grid_heatmap(test_metrics["exact_match_by_operation_and_operand_digits"], heatmap,
                             f"{config.output_dir}: test exact match by operand lengths"):
            tracker.log_image("test/heatmap", heatmap)
    tracker.set_summary(scalar_metrics(test_metrics, "test"))
    tracker.finish()
    log.info(f"done: test exact match {test_metrics['exact_match']:.4f} after {state['training_seconds']:.1f} s of "
             f"training steps and {state['evaluation_seconds']:.1f} s of evaluation; results in {test_results_path}")
    return test_metrics
