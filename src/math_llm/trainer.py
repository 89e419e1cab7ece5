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
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from math_llm import checkpoint as ckpt
from math_llm.batches import epoch_order, step_batches, steps_remaining
from math_llm.checkpoint import TRAINER_STATE_FILE, TRAINING_CONFIG_FILE
from math_llm.data import ArithmeticDataset, check_resumed_data, ensure_dataset, load_splits
from math_llm.distributed import all_gather_objects, all_reduce_sum, barrier, is_main_process, setup_distributed
from math_llm.edge_cases import edge_case_datasets
from math_llm.errors import ConfigError, TrainingDiverged
from math_llm.evaluation import evaluate, publish, scalar_metrics, summary_line
from math_llm.files import write_json
from math_llm.flags import (choice_problems, config_from_dict, flag_fields, flag_name, nested, option,
                             resume_config)
from math_llm.logging_setup import log_to_file
from math_llm.model import ModelConfig, Transformer
from math_llm.probe import ProbedModel, RunningSumProbe, add_running_sums
from math_llm.run_lock import OutputDirLock, writable_dir
from math_llm.runtime import (DEVICES, autocast, machine_description, precision_flag_problems, select_precision,
                              synchronize)
from math_llm.tokenizer import Tokenizer
from math_llm.tracking import start_tracking
from math_llm.trained_model import TrainedModel

log = logging.getLogger(__name__)
HYPER, DATA, LOGGING, SYSTEM = "training hyperparameters", "data and I/O", "logging and checkpointing", "system"


@dataclass
class TrainConfig:
    model: ModelConfig = nested(ModelConfig, "model")
    running_sum_loss: float = option(
        0.0, "multiplication: a linear probe on the last hidden state (before the final LayerNorm) learns to read, at "
             "each answer digit, its column total (the digit products of that place plus the carry in, in tens), and "
             "this weight x its squared error per answer token joins the training loss (and the logged train loss): "
             "a training-time signal that helps a model without a scratchpad learn the long-range dependencies of "
             "multiplication (Bai et al. 2025); 0: off", group="model")
    batch_size: int = option(32, "training batch size per process: under torchrun the global batch is this x the "
                                 "number of processes x --gradient-accumulation-steps", group=HYPER)
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step, e.g. to reproduce an N-process "
                                                 "run on one device", group=HYPER)
    group_by_length: bool = option(False, "batch examples of similar length together (sorted within runs of 64 "
                                          "batches of the shuffled order), so that mixed-length data wastes little "
                                          "compute on padding", group=HYPER)
    eval_batch_size: int = option(64, "evaluation batch size", group=HYPER, resumable=True)
    learning_rate: float = option(1e-4, "peak AdamW learning rate", group=HYPER)
    min_learning_rate_ratio: float = option(0.1, "the cosine decay ends at this fraction of the peak", group=HYPER)
    weight_decay: float = option(0.01, "AdamW weight decay on weight matrices and embeddings", group=HYPER)
    num_epochs: int = option(10, "passes over the training split; given again on resume, it extends the run (or "
                                 "ends it sooner): the learning rate then follows a cosine from its value at that "
                                 "step to the floor at the new end, so a finished run goes on at the floor",
                             group=HYPER, extends=True)
    warmup_steps: int = option(500, "linear warmup steps, capped at half the run", group=HYPER)
    stop_at_exact_match: float | None = option(
        None, "end the run at the first evaluation where the set that chooses best_model.pt (--selection-data, else "
              "val) reaches this exact match, e.g. 0.99: the run then finishes as at its last step (final weights, "
              "test) and trainer_state.json records the step and the seconds of training steps to get there (time "
              "to accuracy); given again on resume, it may change", group=HYPER, extends=True)
    max_grad_norm: float = option(1.0, "gradient clipping norm", group=HYPER)
    data_dir: str = option("data", "directory with train/val/test.json; generated with the defaults if empty",
                           group=DATA)
    selection_data: str | None = option(
        None, "choose best_model.pt by exact match on this JSON file instead of on val: e.g. uniform full-width "
              "problems (generate_data.py --test-only), where a val split of balanced lengths holds few of the long "
              "problems that separate checkpoints; evaluated with val at every --eval-steps", group=DATA)
    init_from: str | None = option(
        None, "start this new run from the weights of another model (its best_model.pt, a checkpoint-N.pt, "
              "model.safetensors or its output dir): fine-tuning, or the next stage of a curriculum (1-10 digits, "
              "then 1-20). The model's shape and vocabulary come from it; the optimizer, the learning-rate schedule "
              "and the step count start afresh", group=DATA)
    output_dir: str = option("checkpoints", "checkpoint and output directory; if it holds a run, that run is resumed",
                             group=DATA, resumable=True)
    num_workers: int = option(4, "accepted for the seed's interface, but no worker processes are started: a batch is "
                                 "an index slice of tensors already on the training device, which costs microseconds "
                                 "in-process, and workers would only add inter-process copies (see docs/speed.md)",
                              group=DATA, resumable=True)
    save_steps: int = option(1000, "save a checkpoint every N steps", group=LOGGING, resumable=True)
    eval_steps: int = option(1000, "evaluate on the val split (and the --selection-data set) every N steps",
                             group=LOGGING, resumable=True)
    logging_steps: int = option(100, "log training metrics every N steps", group=LOGGING, resumable=True)
    keep_checkpoints: int = option(3, "how many of the newest checkpoints to keep", group=LOGGING, resumable=True)
    fp16: bool = option(False, "mixed precision: fp16 autocast with GradScaler on CUDA; on CPU, bf16 autocast (fp16 "
                               "autocast is CUDA-only)", group=SYSTEM)
    bf16: bool = option(False, "bf16 autocast (no GradScaler needed) on CUDA or on a CPU with avx512_bf16/AMX; "
                               "fastest on such CPUs at batch 64 and up (see docs/speed.md)", group=SYSTEM)
    compile: bool = option(False, "torch.compile the model for training (evaluation and checkpoints use the "
                                  "uncompiled model); costs compile time at start, see docs/speed.md for when it pays",
                           group=SYSTEM, resumable=True)
    wandb: bool = option(True, "log to Weights & Biases (online with a login, else offline); --no-wandb: off",
                         group=SYSTEM, resumable=True)
    wandb_project: str = option("math-llm", "W&B project name", group=SYSTEM, resumable=True)
    device: str = option("auto", "auto picks CUDA when present", choices=DEVICES, group=SYSTEM,
                         resumable=True)
    seed: int = option(42, "random seed for init, batch order and default data", group=SYSTEM)

    def __post_init__(self):
        at_least_one = ["batch_size", "gradient_accumulation_steps", "eval_batch_size", "num_epochs", "save_steps",
                        "eval_steps", "logging_steps", "keep_checkpoints"]
        problems = [f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}"
                    for name in at_least_one if getattr(self, name) < 1]
        if not 0 <= self.min_learning_rate_ratio <= 1:
            problems.append(f"--min-learning-rate-ratio must be in [0, 1], got {self.min_learning_rate_ratio}")
        if not (math.isfinite(self.running_sum_loss) and self.running_sum_loss >= 0):
            problems.append(f"--running-sum-loss must be a number >= 0, got {self.running_sum_loss}")
        # NaN compares false with everything, so each rule says what holds; an inf norm means no clipping (torch)
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            problems.append(f"--learning-rate must be a positive number, got {self.learning_rate}")
        if not self.max_grad_norm > 0:
            problems.append(f"--max-grad-norm must be a positive number (inf: no clipping), got {self.max_grad_norm}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            problems.append(f"--weight-decay must be a number >= 0, got {self.weight_decay}")
        if self.stop_at_exact_match is not None and not 0 < self.stop_at_exact_match <= 1:
            problems.append(f"--stop-at-exact-match must be in (0, 1], got {self.stop_at_exact_match}")
        if self.warmup_steps < 0:
            problems.append(f"--warmup-steps must not be negative, got {self.warmup_steps}")
        problems += precision_flag_problems(self.fp16, self.bf16) + choice_problems(self)
        if problems:
            raise ConfigError("; ".join(problems))


TEST_RESULTS_FILE = "test_results.json"
TEST_HEATMAP_FILE = "test_heatmap.png"


def warmup_steps_for(config, total_steps):
    """The warmup, capped at half the run so that a short run still decays."""
    return min(config.warmup_steps, total_steps // 2)


def learning_rate_at(step, config, total_steps, warmup=None, decay_from=None):
    """Linear warmup to the peak, then cosine decay to min_learning_rate_ratio x peak at the last step. `warmup`
    is fixed when a run starts, so a resume with another global batch (and so another total) does not warm up anew.
    `decay_from`: (step, learning rate) where a run was extended (or shortened) with another --num-epochs: from that
    step on, the cosine goes from that rate to the floor at the new last step, without a jump."""
    peak = config.learning_rate
    floor = peak * config.min_learning_rate_ratio
    if decay_from is not None and step >= decay_from[0]:
        start, start_rate = decay_from
        progress = (step - start) / max(1, total_steps - start)
        return floor + 0.5 * (start_rate - floor) * (1 + math.cos(math.pi * min(progress, 1.0)))
    warmup = warmup_steps_for(config, total_steps) if warmup is None else warmup
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(progress, 1.0)))


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


def build_optimizer(model, config):
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
    on CPU, docs/speed.md). The returned module shares the model's parameters."""
    return torch.compile(model, dynamic=False)


def train_step(model, optimizer, scaler, micro_batches, learning_rate, config, device, precision):
    """One optimizer step over this rank's micro-batches (see `step_batches`); under DDP the gradient all-reduce
    runs on the last micro-batch only. Returns this rank's share of the global batch's mean loss (summed over the
    ranks and divided by the world size, it is that loss) and the gradient norm before clipping, as device tensors
    (no host sync)."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
    loss_share = torch.zeros((), device=device)
    for index, (inputs, targets, extra, weight) in enumerate(micro_batches):
        accumulating = isinstance(model, DistributedDataParallel) and index < len(micro_batches) - 1
        with model.no_sync() if accumulating else contextlib.nullcontext():
            with autocast(device, precision):
                _, loss = model(inputs, targets, **extra)
            scaler.scale(loss * weight).backward()
        loss_share += loss.detach() * weight
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss_share, grad_norm


class IntervalMeter:
    """Loss, gradient norm and tokens of the steps since the last log line, summed on the device: no host sync
    per step."""

    def __init__(self, device, seconds):
        self.device = device
        self.loss, self.grad_norm = torch.zeros((), device=device), torch.zeros((), device=device)
        self.steps = self.tokens = 0
        self.start = seconds

    def add(self, loss, grad_norm, tokens):
        self.loss += loss
        self.grad_norm += grad_norm
        self.steps += 1
        self.tokens += tokens

    def check_finite(self, step):
        """A diverged loss on any rank stops every rank before it evaluates or saves."""
        if self.steps:
            check_finite(all_reduce_sum(self.loss.clone()).item(), step)

    def read(self, seconds, ranks, step):
        """(the interval's train/ metrics, its seconds per step), and a new interval from `seconds` on."""
        loss, tokens = all_reduce_sum(torch.stack([self.loss, torch.tensor(float(self.tokens), device=self.device)])
                                      ).tolist()
        metrics = {"train/loss": check_finite(loss / ranks.world_size, step) / self.steps,
                   "train/grad_norm": self.grad_norm.item() / self.steps,
                   "train/tokens_per_second": tokens / (seconds - self.start)}
        seconds_per_step = (seconds - self.start) / self.steps
        self.loss.zero_()
        self.grad_norm.zero_()
        self.steps = self.tokens = 0
        self.start = seconds
        return metrics, seconds_per_step


# ---------------------------------------------------------------------------------------------------------------
# Setup

def resumed_run(config, explicit_flags):
    """(config, newest usable checkpoint or None, its path, the data config of the run's training data or None): the
    run already in config.output_dir takes its saved config, changed only by the explicit flags that may change on
    resume; a run stopped before its first checkpoint restarts with its own config, from training_config.json."""
    checkpoint, source = ckpt.load_latest_checkpoint(
        config.output_dir, check=lambda found, path: config_from_dict(TrainConfig, found["train_config"], path)) \
        or (None, None)
    config_path = os.path.join(config.output_dir, TRAINING_CONFIG_FILE)
    if checkpoint:
        saved = checkpoint
    elif os.path.exists(config_path):
        source, saved = config_path, read_saved_config(config_path)
    else:
        return config, None, None, None
    run_config = replace(config_from_dict(TrainConfig, saved["train_config"], source), output_dir=config.output_dir)
    return resume_config(config, explicit_flags, run_config, source), checkpoint, source, saved.get("data_config")


def read_saved_config(path):
    """What training_config.json records (train_config, data_config...); a ConfigError in one line for a damaged
    file."""
    advice = "this run has no checkpoint to resume from, so move the file away (or the whole dir) to start over"
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"{path}: damaged ({error}); {advice}") from None
    if not isinstance(saved, dict) or "train_config" not in saved:
        raise ConfigError(f"{path}: damaged (no train_config inside); {advice}")
    return saved


def load_training_data(config, ranks, device, vocab=None, prepare=None, resumed_data=None):
    """(datasets by split, tokenizer), on the training device. First rank 0 runs `prepare` (a recipe generates its
    datasets), or else generates the default dataset into an empty data dir; under torchrun the others wait.
    `vocab`: a resumed run's own, or that of the model it starts from (--init-from). `resumed_data`: the data config
    of a resumed run's data, which, if gone, is an error saying how to restore it, never replaced by the default."""
    if resumed_data is not None and prepare is None:  # every rank checks: none waits below for a rank 0 that stopped
        check_resumed_data(config.output_dir, config.data_dir, resumed_data)
    if ranks.is_main and prepare is not None:
        prepare()
    elif ranks.is_main:
        ensure_dataset(config.data_dir, config.seed)
    barrier()  # the other ranks look once rank 0 is done: a split it is still writing is no error
    datasets, tokenizer = load_splits(config.data_dir, Tokenizer(vocab) if vocab else None)
    for dataset in datasets.values():
        dataset.to(device)
    return datasets, tokenizer


def build_model(config, datasets, tokenizer, device):
    """(config with the model's data-given fields set, TrainedModel): the model (and the running-sum probe if
    asked for) with the vocabulary of the data, which it must be able to read."""
    config = replace(config, model=replace(config.model, vocab_size=len(tokenizer), **tokenizer.digit_place_ids()))
    model = Transformer(config.model).to(device)
    probe = RunningSumProbe(config.model.hidden_size).to(device) if config.running_sum_loss else None
    train_split = datasets["train"]
    data_config = {key: value for key, value in train_split.metadata.items() if key != "split"}
    trained = TrainedModel(model, tokenizer, train_split.format, train_split.operand_width, data_config, probe,
                           config.output_dir)
    trained.check_datasets(*datasets.values())
    if probe is not None:
        with_sums = add_running_sums(train_split)
        if not with_sums:
            raise ConfigError(f"--running-sum-loss: {train_split.source} has no problems with running sums "
                              f"(two-operand multiplication)")
        log.info(f"running-sum probe: {with_sums} of {len(train_split)} training problems have running sums")
        for split in ("val", "test"):  # the probe's readings are evaluated with the rest
            add_running_sums(datasets[split])
    return config, trained


def initial_model(config, explicit_flags):
    """(config with the model shape of --init-from's model, that model as a TrainedModel on the CPU). Only the
    dropout and, given explicitly, the max length (for longer data: see start_from) may differ from the model's;
    another explicit shape flag is a ConfigError."""
    initial = ckpt.load_model(config.init_from, torch.device("cpu"))
    shape = initial.model.config
    free = {"dropout", "max_length"}
    conflicts = [f"{flag_name(field)} {getattr(config.model, name)!r} (the model has {getattr(shape, name)!r})"
                 for name, (_, field) in flag_fields(ModelConfig).items()
                 if name in explicit_flags - free and getattr(config.model, name) != getattr(shape, name)]
    if conflicts:
        raise ConfigError(f"--init-from {config.init_from}: a run started from a model has that model's shape; drop "
                          f"{', '.join(conflicts)}")
    max_length = config.model.max_length if "max_length" in explicit_flags else shape.max_length
    return replace(config, model=replace(shape, dropout=config.model.dropout, max_length=max_length)), initial


def start_from(trained, initial):
    """Copies the weights of `initial` (and of its probe, where both have one) into the new run's model. A learned
    position table of another --max-length keeps the positions both have; positions beyond the old table keep their
    fresh initialisation (a curriculum to longer problems)."""
    weights = initial.model.state_dict()
    table = "position_embedding.weight"
    if table in weights and weights[table].shape != trained.model.position_embedding.weight.shape:
        resized = trained.model.position_embedding.weight.detach().clone()
        kept = min(len(resized), len(weights[table]))
        resized[:kept] = weights[table][:kept]
        weights[table] = resized
    trained.model.load_state_dict(weights)
    if trained.probe is not None and initial.probe is not None:
        trained.probe.load_state_dict(initial.probe.state_dict())
    log.info(f"starting from the weights of {initial.source} (step {initial.step}); the optimizer and the "
             f"learning-rate schedule start afresh")


def change_length(state, config, planned_epochs, num_train, examples_per_step):
    """A resume with another --num-epochs than the run planned: the learning rate goes on from its value at this
    step, down a cosine to the floor at the new end (see learning_rate_at); a finished run goes on at the floor."""
    planned_total = state.step + steps_remaining(state.examples_seen, num_train, planned_epochs, examples_per_step)
    rate = learning_rate_at(state.step, replace(config, num_epochs=planned_epochs), planned_total,
                            state.warmup_steps, state.decay_from)
    state.decay_from = (state.step, rate)
    log.info(f"--num-epochs {config.num_epochs} (the run planned {planned_epochs}): from step {state.step} the "
             f"learning rate goes from {rate:.2e} down a cosine to "
             f"{config.learning_rate * config.min_learning_rate_ratio:.2e} at the new end")


def trainable_module(config, trained, ranks, device):
    """(what the optimizer updates, what a training step calls): the model, or the model with its probe's loss;
    torch.compile'd with --compile and wrapped in DDP under torchrun. The raw model (same parameters) is evaluated
    and saved, as nanoGPT/nanochat do."""
    module = ProbedModel(trained.model, trained.probe, config.running_sum_loss) if trained.probe else trained.model
    step_module = compile_for_training(module) if config.compile else module
    if ranks.distributed:  # no buffer changes in training (the abacus codes are constant): nothing to broadcast
        step_module = DistributedDataParallel(step_module, broadcast_buffers=False,
                                              device_ids=[device.index] if device.type == "cuda" else None)
    return module, step_module


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
# Side jobs of the loop

def log_training(meter, clock, state, step, total_steps, learning_rate, ranks, num_train, tracker, progress):
    seconds = clock.read()
    metrics, seconds_per_step = meter.read(seconds, ranks, step)
    metrics.update({"train/learning_rate": learning_rate, "train/epoch": state.examples_seen / num_train,
                    "train/training_seconds": seconds})
    log.info(f"step {step}/{total_steps} | epoch {metrics['train/epoch']:.2f} | loss {metrics['train/loss']:.4f} | "
             f"lr {learning_rate:.2e} | grad norm {metrics['train/grad_norm']:.3f} | "
             f"{metrics['train/tokens_per_second']:,.0f} tokens/s | "
             f"ETA {format_duration((total_steps - step) * seconds_per_step)}")
    progress.set_postfix(loss=f"{metrics['train/loss']:.4f}")
    tracker.log(metrics, step=step)
    state.log_history.append({"step": step, **metrics})


def load_selection_set(config, trained, device):
    """The --selection-data set, tokenised with the run's tokenizer and checked against its model; None without."""
    if config.selection_data is None:
        return None
    dataset = ArithmeticDataset.from_file(config.selection_data, trained.tokenizer)
    trained.check_datasets(dataset)
    return dataset.to(device)


def evaluate_on_val(config, trained, dataset, edge_sets, selection_set, device, precision, state, ranks, tracker):
    """Evaluates val (and the selection set, if any), logs them, and keeps best_model.pt: the best exact match so far
    on the selection set, else on val (ties to the lower loss)."""
    results = evaluate(trained, dataset, edge_sets, config.eval_batch_size, device, precision)
    log.info(summary_line(results, "val"))
    for mistake in results["mistakes"][:3]:
        log.info(f"  val mistake: {mistake['prompt']}{mistake['predicted']} (expected {mistake['expected']})")
    check_finite(results["loss"], state.step)  # the last update can break weights after a finite training loss
    metrics = {**scalar_metrics(results, "val"), "val/seconds": results["seconds"]}
    chosen_on, chosen = "val", results
    state.evaluation_seconds += results["seconds"]
    if selection_set is not None:
        chosen_on, chosen = "selection", evaluate(trained, selection_set, {}, config.eval_batch_size, device, precision)
        log.info(summary_line(chosen, "selection"))
        metrics.update({f"selection/{key}": chosen[key] for key in ("exact_match", "token_accuracy", "loss")})
        state.evaluation_seconds += chosen["seconds"]
    tracker.log(metrics, step=state.step)
    state.log_history.append({"step": state.step, "train/training_seconds": state.training_seconds,
                              **{key: value for key, value in metrics.items() if in_history(key)}})
    if improves_on_best(chosen, state):
        state.best_exact_match, state.best_loss = chosen["exact_match"], chosen["loss"]
        if ranks.is_main:
            path = os.path.join(config.output_dir, ckpt.BEST_MODEL)
            ckpt.save_best_model(path, config, trained, state.step, chosen_on,
                                 {key: value for key, value in chosen.items() if key != "mistakes"})
            log.info(f"new best {chosen_on} exact match {chosen['exact_match']:.4f} (loss {chosen['loss']:.4f}): "
                     f"saved {path}")


def save_checkpoint(config, trained, state, optimizer, scaler, ranks, fingerprint, precision):
    rng_states = all_gather_objects(ckpt.capture_rng_state())
    if ranks.is_main:
        path = ckpt.checkpoint_path(config.output_dir, state.step)
        ckpt.save_training_checkpoint(path, config, trained, state, optimizer, scaler, rng_states, fingerprint,
                                      precision.description)
        ckpt.remove_old_checkpoints(config.output_dir, config.keep_checkpoints)
        log.info(f"saved {path}")


def improves_on_best(metrics, state):
    """A higher exact match (on the selection set, else val), or the same one with a lower loss: so a run whose
    evaluations tie (all at 0% on a task not yet learned, all at 100% on one learned early) keeps its best-fitting
    model, not its first."""
    return (metrics["exact_match"], -metrics["loss"]) > (state.best_exact_match, -state.best_loss)


def in_history(metric):
    """What trainer_state.json keeps of each val evaluation: the totals, each operation, the edge cases and the
    probe's RMSE (the per-cell, per-carry and per-place figures are many; W&B has them)."""
    return not metric.startswith(("val/by_digits/", "val/by_carries/", "val/by_operands/", "val/by_length/",
                                  "val/digit_accuracy/", "val/running_sum_probe/rmse/"))


def selected_on(config):
    """The set whose exact match chooses best_model.pt (and ends the run with --stop-at-exact-match)."""
    return "selection" if config.selection_data else "val"


def time_to_target(log_history, target, set_name):
    """{step, training_seconds} of the first evaluation at which `set_name` ("val" or "selection") reached `target`
    exact match, from a trainer_state.json's log history; None without a target or before it is reached."""
    if target is None:
        return None
    key = f"{set_name}/exact_match"
    return next(({"step": entry["step"], "training_seconds": entry["train/training_seconds"]}
                 for entry in log_history if entry.get(key, -1) >= target), None)


def write_trainer_state(config, state, total_steps):
    """trainer_state.json (as in HF's Trainer): where the run is, the best exact match on the set that chooses
    best_model.pt, and every logged metric so far, with the seconds of training steps behind it (e.g. the time to
    reach an accuracy)."""
    write_json(os.path.join(config.output_dir, TRAINER_STATE_FILE),
               {"step": state.step, "total_steps": total_steps, "selected_on": selected_on(config),
                "best_exact_match": state.best_exact_match,
                "best_loss": state.best_loss if math.isfinite(state.best_loss) else None,  # none known
                "training_seconds": state.training_seconds, "evaluation_seconds": state.evaluation_seconds,
                "stop_at_exact_match": config.stop_at_exact_match,
                "reached_at": time_to_target(state.log_history, config.stop_at_exact_match, selected_on(config)),
                "log_history": state.log_history})


def write_training_config(config, trained, ranks, device, num_train, examples_per_step, total_steps):
    """training_config.json: the layout of this (re)start; machine, world size and global batch may differ from the
    last."""
    write_json(os.path.join(config.output_dir, TRAINING_CONFIG_FILE),
               {"train_config": asdict(config), **trained.description(),
                "machine": f"{machine_description(device)}, torch {torch.__version__}",
                "num_parameters": trained.model.num_parameters(), "train_examples": num_train,
                "world_size": ranks.world_size, "global_batch_size": examples_per_step,
                "steps_per_epoch": math.ceil(num_train / examples_per_step), "total_steps": total_steps})


def test_best_model(config, trained, dataset, edge_sets, device, ranks, tracker):
    """The end of a run: the best model (by exact match on the selection set or val) on the held-out test split, in fp32 whatever the
    training precision (val ran under it, for speed): the figures evaluate.py reports by default, and a bf16 model
    can score higher in fp32."""
    barrier()  # best_model.pt is complete before any rank reads it
    best_path = os.path.join(config.output_dir, ckpt.BEST_MODEL)
    best = ckpt.load_checkpoint(best_path)
    trained.model.load_state_dict(best["model"])
    if trained.probe is not None:
        trained.probe.load_state_dict(best["probe"])
    results = evaluate(trained, dataset, edge_sets, config.eval_batch_size, device, select_precision(device))
    results.update(checkpoint=best_path, model_step=best["step"])
    if ranks.is_main:
        images = publish(results, "test", os.path.join(config.output_dir, TEST_RESULTS_FILE),
                         os.path.join(config.output_dir, TEST_HEATMAP_FILE),
                         f"{config.output_dir}: test exact match by operand lengths")
        for image in images:
            tracker.log_image("test/heatmap", image)
    tracker.set_summary(scalar_metrics(results, "test"))
    return results


def target_reached(config, state):
    """Whether the run has reached its --stop-at-exact-match on the set that chooses best_model.pt."""
    return config.stop_at_exact_match is not None and state.best_exact_match >= config.stop_at_exact_match


def check_finite(value, step):
    if not math.isfinite(value):
        raise TrainingDiverged(f"loss became {value} by step {step}; stopping without saving this model. "
                               f"Train again in a new --output-dir with a lower --learning-rate (or without --fp16)")
    return value


def format_duration(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"


def stop_requested_anywhere(stop, ranks, device):
    """A Ctrl-C or SIGTERM seen by any rank stops all of them after the same step (one tiny all-reduce per step,
    only under torchrun): a rank that stopped alone would leave the others waiting in the next all-reduce."""
    if not ranks.distributed:
        return stop.requested
    return all_reduce_sum(torch.tensor(float(stop.requested), device=device)).item() > 0


# ---------------------------------------------------------------------------------------------------------------
# The run

def train(config, explicit_flags=frozenset(), prepare=None):
    """Trains (or resumes) the run in config.output_dir and writes its final outputs. Returns the test results,
    or None when a signal stopped it first. Under torchrun every process runs this; rank 0 alone writes files,
    logs and W&B, runs `prepare` (a recipe's data generation) before the data is read, and holds the output dir's
    lock."""
    writable_dir(config.output_dir)
    is_main = is_main_process()
    with OutputDirLock(config.output_dir) if is_main else contextlib.nullcontext():
        if is_main:
            log_to_file(os.path.join(config.output_dir, "logs", "training.log"))
        return run_training(config, explicit_flags, prepare)


def run_training(config, explicit_flags, prepare):
    config, checkpoint, source, resumed_data = resumed_run(config, explicit_flags)
    ranks, device = setup_distributed(config.device)
    precision = select_precision(device, config.fp16, config.bf16)
    initial = None  # the model a new run starts from (--init-from)
    if checkpoint is None and config.init_from:
        config, initial = initial_model(config, explicit_flags)

    # Data, tokenised once and kept on the training device; the model that reads it
    vocab = checkpoint["vocab"] if checkpoint else initial and initial.tokenizer.vocab
    datasets, tokenizer = load_training_data(config, ranks, device, vocab, prepare, resumed_data)
    seed_everything(config.seed)
    config, trained = build_model(config, datasets, tokenizer, device)
    if initial:
        start_from(trained, initial)
    edge_sets = edge_case_datasets(datasets["val"], tokenizer, trained.model)  # val and test share their data's
    selection_set = load_selection_set(config, trained, device)
    if ranks.distributed:  # the same initial weights everywhere (DDP checks), different dropout masks per rank
        torch.manual_seed(config.seed * 1000 + ranks.rank)
    module, step_module = trainable_module(config, trained, ranks, device)
    optimizer = build_optimizer(module, config)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_grad_scaler)
    fingerprint, num_train = datasets["train"].fingerprint(), len(datasets["train"])  # hashed once per (re)start
    examples_per_step = config.batch_size * ranks.world_size * config.gradient_accumulation_steps
    state = ckpt.TrainingState()
    if checkpoint:
        ckpt.check_resumable(checkpoint, source, datasets["train"].source, fingerprint, precision.description)
        state = ckpt.restore_training(checkpoint, source, trained, optimizer, scaler, ranks, config.seed)
        if checkpoint["train_config"]["num_epochs"] != config.num_epochs:
            change_length(state, config, checkpoint["train_config"]["num_epochs"], num_train, examples_per_step)
    total_steps = state.step + steps_remaining(state.examples_seen, num_train, config.num_epochs, examples_per_step)
    if checkpoint:
        log.info(f"resuming {source} at step {state.step}/{total_steps} (example {state.examples_seen % num_train} "
                 f"of epoch {state.examples_seen // num_train + 1})")
    else:
        state.warmup_steps = warmup_steps_for(config, total_steps)
    test_results_path = os.path.join(config.output_dir, TEST_RESULTS_FILE)
    reached = target_reached(config, state)
    if (state.step >= total_steps or reached) and os.path.exists(test_results_path):
        extend = (f"a higher --stop-at-exact-match (it reached {config.stop_at_exact_match})" if reached else
                  f"--num-epochs (more than {config.num_epochs})")
        finished = f"at its target, step {state.step}" if reached else f"{total_steps} steps"
        log.info(f"{config.output_dir}: this run is already finished ({finished}); results are in "
                 f"{test_results_path}. Use a new --output-dir to train again, or give {extend} to go on")
        with open(test_results_path) as f:
            return json.load(f)
    if ranks.is_main:
        write_training_config(config, trained, ranks, device, num_train, examples_per_step, total_steps)
    shape = config.model
    log.info(f"model {shape.model_size} ({shape.shape_text}): {trained.model.num_parameters():,} unique parameters "
             f"| {config.num_epochs} "
             f"epochs x {math.ceil(num_train / examples_per_step)} steps of global batch {examples_per_step} "
             f"({config.batch_size} per process x {ranks.world_size} processes x {config.gradient_accumulation_steps} "
             f"accumulation steps) = {total_steps} steps | device {device} | precision {precision.description}"
             f"{' | torch.compile' if config.compile else ''}")
    log.info(f"data loading: batches are index slices of tensors already on {device}, taken in this process; "
             f"no worker processes are started (--num-workers {config.num_workers} has nothing to do here)")
    tracker = start_tracking(config.wandb and ranks.is_main, config.wandb_project, config.output_dir,
                             {**asdict(config), "num_parameters": trained.model.num_parameters()}, state.step)

    # Loop: each epoch's order from (seed, epoch), resumed at the example the run had reached
    module.train()
    clock = TrainingClock(device, state.training_seconds)
    meter = IntervalMeter(device, clock.seconds)
    with StopRequest() as stop, logging_redirect_tqdm(), \
            tqdm(total=total_steps, initial=state.step, desc="training", unit="step", dynamic_ncols=True,
                 disable=None if ranks.is_main else True) as progress:  # None: a bar on a terminal only
        for epoch in range(state.examples_seen // num_train, config.num_epochs):
            if reached:  # at its target (just now, or before a resume that found no test results): to the end
                break
            order = epoch_order(num_train, config.seed, epoch,
                                *((datasets["train"].lengths, config.batch_size) if config.group_by_length else ()))
            for micro_batches, step_examples in step_batches(datasets["train"], order, config.batch_size, ranks,
                                                             config.gradient_accumulation_steps,
                                                             state.examples_seen - epoch * num_train):
                learning_rate = learning_rate_at(state.step, config, total_steps, state.warmup_steps,
                                                 state.decay_from)
                loss, grad_norm = train_step(step_module, optimizer, scaler, micro_batches, learning_rate, config,
                                             device, precision)
                state.step += 1
                state.examples_seen += step_examples
                progress.update()
                meter.add(loss, grad_norm, sum(inputs.numel() for inputs, *_ in micro_batches))
                stopping = stop_requested_anywhere(stop, ranks, device)
                step = state.step
                if step % config.logging_steps == 0 or step == total_steps:
                    log_training(meter, clock, state, step, total_steps, learning_rate, ranks, num_train, tracker,
                                 progress)
                evaluating = step % config.eval_steps == 0 or step == total_steps
                saving = step % config.save_steps == 0 or step == total_steps or stopping
                if evaluating or saving:
                    state.training_seconds = clock.read()  # evaluation and saving are not training time
                    meter.check_finite(step)  # a diverged model is neither evaluated nor saved, on any rank
                    if evaluating:
                        evaluate_on_val(config, trained, datasets["val"], edge_sets, selection_set, device,
                                        precision, state, ranks, tracker)
                        reached = target_reached(config, state)
                    if saving or reached:  # a run that ends at its target can be resumed as finished
                        save_checkpoint(config, trained, state, optimizer, scaler, ranks, fingerprint, precision)
                    if ranks.is_main:
                        write_trainer_state(config, state, total_steps)
                    clock.restart()
                if stopping:
                    log.warning(f"stopped at step {step}/{total_steps}; run the same command to resume")
                    tracker.finish()
                    return None
                if reached:
                    log.info(f"exact match {state.best_exact_match:.4f} reached --stop-at-exact-match "
                             f"{config.stop_at_exact_match} at step {step}/{total_steps}, after "
                             f"{state.training_seconds:.2f} s of training steps: the run ends here")
                    tracker.set_summary({"reached_at/step": step,
                                         "reached_at/training_seconds": state.training_seconds})
                    break

    # End: the final weights, then the best model on the held-out test split
    if ranks.is_main:
        ckpt.save_final_weights(config.output_dir, config, trained, state.step)
    results = test_best_model(config, trained, datasets["test"], edge_sets, device, ranks, tracker)
    tracker.finish()
    log.info(f"done: test exact match {results['exact_match']:.4f} after {state.training_seconds:.1f} s of "
             f"training steps and {state.evaluation_seconds:.1f} s of evaluation; results in {test_results_path}")
    return results
