"""The training loop shared by every entry point: setup, data, model, optimizer, then steps with eval/save/log.

Resuming is re-entering this loop at the step stored in the newest checkpoint: the batch order of every epoch is a
pure function of (seed, epoch), so a step number says exactly which batches were already seen.
"""

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
from tqdm.contrib.logging import logging_redirect_tqdm

from src import checkpoint as ckpt
from src.data import SPLITS, ArithmeticDataset, DataConfig, generate_splits, split_path, write_splits
from src.errors import ConfigError, DataError, TrainingDiverged
from src.evaluation import evaluate
from src.files import write_json
from src.model import Transformer, build_model_config
from src.runtime import autocast, select_device, select_precision
from src.tokenizer import Tokenizer
from src.tracking import start_tracking

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    model_size: str = "small"
    max_length: int = 32
    dropout: float = 0.0
    batch_size: int = 32
    eval_batch_size: int = 64
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
    no_wandb: bool = False
    wandb_project: str = "math-llm"
    device: str = "auto"
    seed: int = 42

    def __post_init__(self):
        at_least_one = ["max_length", "batch_size", "eval_batch_size", "num_epochs", "save_steps", "eval_steps",
                        "logging_steps", "keep_checkpoints"]
        problems = [f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}"
                    for name in at_least_one if getattr(self, name) < 1]
        if not 0 <= self.dropout < 1:
            problems.append(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.min_learning_rate_ratio <= 1:
            problems.append(f"--min-learning-rate-ratio must be in [0, 1], got {self.min_learning_rate_ratio}")
        if self.learning_rate <= 0 or self.max_grad_norm <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            problems.append("--learning-rate and --max-grad-norm must be positive, --weight-decay and "
                            "--warmup-steps not negative")
        if problems:
            raise ConfigError("; ".join(problems))


# Settings that may differ when a run is resumed: they change how it is watched, not what it computes.
RESUMABLE_OVERRIDES = {"output_dir", "num_workers", "save_steps", "eval_steps", "logging_steps", "keep_checkpoints",
                       "no_wandb", "wandb_project", "device", "eval_batch_size"}
TRAINING_CONFIG_FILE = "training_config.json"
FINAL_MODEL_FILE = "pytorch_model.bin"
TEST_RESULTS_FILE = "test_results.json"


def learning_rate_at(step, config, total_steps):
    """Linear warmup to the peak, then cosine decay to min_learning_rate_ratio x peak at the last step."""
    peak = config.learning_rate
    warmup = min(config.warmup_steps, total_steps // 2)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    floor = peak * config.min_learning_rate_ratio
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(progress, 1.0)))


def epoch_order(num_examples, seed, epoch):
    """The shuffled example order of one epoch, a pure function of (seed, epoch)."""
    return torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


class EpochBatches(torch.utils.data.Dataset):
    """Batch i of an epoch: a slice of the epoch's order, cut from the pre-tokenised tensors."""

    def __init__(self, dataset, order, batch_size):
        self.dataset, self.order, self.batch_size = dataset, order, batch_size

    def __len__(self):
        return math.ceil(len(self.order) / self.batch_size)

    def __getitem__(self, index):
        return self.dataset.batch(self.order[index * self.batch_size:(index + 1) * self.batch_size])


def ignore_sigint(_worker_id):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle


def epoch_loader(dataset, config, epoch, first_batch, num_workers, pin_memory):
    batches = EpochBatches(dataset, epoch_order(len(dataset), config.seed, epoch), config.batch_size)
    # Its own generator: a loader seeds its workers from the global RNG otherwise, and a resumed run would then
    # draw different dropout masks than an uninterrupted one.
    return torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(first_batch, len(batches)),
                                       num_workers=num_workers, pin_memory=pin_memory,
                                       worker_init_fn=ignore_sigint if num_workers else None,
                                       generator=torch.Generator().manual_seed(config.seed + epoch))


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


def ensure_dataset(data_dir, seed):
    """A missing dataset is generated with the defaults; a partial one is an error (never silently replaced)."""
    missing = [split for split in SPLITS if not os.path.exists(split_path(data_dir, split))]
    if not missing:
        return
    if len(missing) < len(SPLITS):
        raise DataError(f"{data_dir}: missing {', '.join(split_path(data_dir, s) for s in missing)} "
                        f"(regenerate all splits with scripts/generate_data.py --output-dir {data_dir})")
    data_config = DataConfig(seed=seed)
    log.info(f"no dataset in {data_dir}/: generating the default one ({data_config})")
    write_splits(data_dir, generate_splits(data_config, log), data_config)


def build_optimizer(model, config, device):
    """AdamW, decaying matrices and embeddings but not biases or LayerNorm gains (as nanoGPT)."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in parameters if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.95), fused=device.type == "cuda")


def data_loading_workers(requested):
    """Workers beyond the spare cores only compete with the training process for CPU."""
    return max(0, min(requested, (os.cpu_count() or 1) - 1))


# ---------------------------------------------------------------------------------------------------------------
# Side jobs of the loop

def save_training_checkpoint(state, config):
    path = ckpt.checkpoint_path(config.output_dir, state["step"])
    ckpt.save_atomic({**state, "rng": ckpt.capture_rng_state()}, path)
    ckpt.remove_old_checkpoints(config.output_dir, config.keep_checkpoints)
    log.info(f"saved {path}")


def save_best_model(model, state, metrics, config):
    path = os.path.join(config.output_dir, ckpt.BEST_MODEL)
    ckpt.save_atomic({"model": model.state_dict(), "model_config": state["model_config"],
                      "train_config": state["train_config"], "vocab": state["vocab"], "step": state["step"],
                      "val_metrics": {k: v for k, v in metrics.items() if k != "mistakes"}}, path)
    log.info(f"new best val exact match {metrics['exact_match']:.4f}: saved {path}")


def run_evaluation(model, dataset, tokenizer, config, device, precision, split):
    metrics = evaluate(model, dataset, tokenizer, config.eval_batch_size, device, precision)
    log.info(f"{split}: exact match {metrics['exact_match']:.4f} | token accuracy {metrics['token_accuracy']:.4f} "
             f"| loss {metrics['loss']:.4f} ({metrics['num_examples']} problems)")
    for mistake in metrics["mistakes"][:3]:
        log.info(f"  {split} mistake: {mistake['prompt']}{mistake['predicted']} (expected {mistake['expected']})")
    return metrics


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
    """Trains (or resumes) the run in config.output_dir and writes its final outputs. Returns the test metrics."""
    os.makedirs(config.output_dir, exist_ok=True)
    checkpoint, checkpoint_source = ckpt.load_latest_checkpoint(config.output_dir, log) or (None, None)
    config_path = os.path.join(config.output_dir, TRAINING_CONFIG_FILE)
    if checkpoint:
        config = resolve_config(config, explicit_flags, checkpoint["train_config"], checkpoint_source)
    elif os.path.exists(config_path):  # a run stopped before its first checkpoint: restart it with its own config
        with open(config_path) as f:
            config = resolve_config(config, explicit_flags, json.load(f)["train_config"], config_path)

    device = select_device(config.device)
    precision = select_precision(config.fp16, device)

    # Data
    ensure_dataset(config.data_dir, config.seed)
    tokenizer = Tokenizer(checkpoint["vocab"] if checkpoint else None)
    datasets = {split: ArithmeticDataset.from_file(split_path(config.data_dir, split), tokenizer, config.max_length)
                for split in SPLITS}
    steps_per_epoch = math.ceil(len(datasets["train"]) / config.batch_size)
    total_steps = steps_per_epoch * config.num_epochs

    # Model, optimizer
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    model_config = build_model_config(config.model_size, len(tokenizer), config.max_length, config.dropout)
    model = Transformer(model_config).to(device)
    optimizer = build_optimizer(model, config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_grad_scaler)
    state = {"step": 0, "best_exact_match": -1.0, "train_config": asdict(config), "model_config": asdict(model_config),
             "vocab": tokenizer.vocab, "train_data_fingerprint": datasets["train"].fingerprint(),
             "precision": precision.description}
    if checkpoint:
        if checkpoint["model_config"] != state["model_config"]:
            raise ConfigError(f"{checkpoint_source}: model config {checkpoint['model_config']} does not match "
                              f"{state['model_config']}")
        if checkpoint["train_data_fingerprint"] != state["train_data_fingerprint"]:
            raise ConfigError(f"{checkpoint_source}: {split_path(config.data_dir, 'train')} changed since this run "
                              f"started, so its position in the data is lost; restore that data or use a new --output-dir")
        if checkpoint["precision"] != precision.description:
            log.warning(f"{checkpoint_source} was trained with {checkpoint['precision']} and resumes with "
                        f"{precision.description}: it continues, but will not match an uninterrupted run exactly")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint["scaler"] and scaler.is_enabled():  # a disabled scaler (fp32, bf16) saves an empty state
            scaler.load_state_dict(checkpoint["scaler"])
        ckpt.restore_rng_state(checkpoint["rng"])
        state.update(step=checkpoint["step"], best_exact_match=checkpoint["best_exact_match"])
        log.info(f"resuming {checkpoint_source} at step {state['step']}/{total_steps}")
    write_json(config_path, {"train_config": asdict(config), "model_config": asdict(model_config),
                             "num_parameters": model.num_parameters(), "vocab": tokenizer.vocab,
                             "train_examples": len(datasets["train"]), "steps_per_epoch": steps_per_epoch,
                             "total_steps": total_steps})

    test_results_path = os.path.join(config.output_dir, TEST_RESULTS_FILE)
    if state["step"] >= total_steps and os.path.exists(test_results_path):
        log.info(f"{config.output_dir}: this run is already finished ({total_steps} steps); results are in "
                 f"{test_results_path}. Use a new --output-dir to train again")
        with open(test_results_path) as f:
            return json.load(f)

    num_workers = data_loading_workers(config.num_workers)
    log.info(f"model {config.model_size}: {model.num_parameters():,} parameters | {config.num_epochs} epochs x "
             f"{steps_per_epoch} steps of batch {config.batch_size} = {total_steps} steps | device {device} | "
             f"precision {precision.description} | data-loading workers {num_workers} "
             f"(--num-workers {config.num_workers}, {os.cpu_count()} CPUs)")
    tracker = start_tracking(not config.no_wandb, config.wandb_project, config.output_dir,
                             {**asdict(config), "num_parameters": model.num_parameters()})

    # Loop
    model.train()
    step = state["step"]
    loss_sum = torch.zeros((), device=device)
    grad_norm_sum = torch.zeros((), device=device)
    interval_steps = interval_tokens = 0
    interval_start = time.perf_counter()
    with StopRequest() as stop, logging_redirect_tqdm(), \
            tqdm(total=total_steps, initial=step, desc="training", unit="step", dynamic_ncols=True,
                 disable=None) as progress:  # None: a bar on a terminal, none in log files
        for epoch in range(step // steps_per_epoch, config.num_epochs):
            loader = epoch_loader(datasets["train"], config, epoch, step % steps_per_epoch, num_workers,
                                  pin_memory=device.type == "cuda")
            for inputs, targets in loader:
                inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                learning_rate = learning_rate_at(step, config, total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate
                with autocast(device, precision):
                    _, loss = model(inputs, targets)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)

                step += 1
                state["step"] = step
                progress.update()
                loss_sum += loss.detach()
                grad_norm_sum += grad_norm
                interval_steps += 1
                interval_tokens += inputs.numel()

                if step % config.logging_steps == 0 or step == total_steps:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    elapsed = time.perf_counter() - interval_start
                    metrics = {"train/loss": check_finite(loss_sum.item(), step) / interval_steps,
                               "train/learning_rate": learning_rate,
                               "train/grad_norm": grad_norm_sum.item() / interval_steps,
                               "train/tokens_per_second": interval_tokens / elapsed,
                               "train/epoch": step / steps_per_epoch}
                    log.info(f"step {step}/{total_steps} | epoch {metrics['train/epoch']:.2f} | "
                             f"loss {metrics['train/loss']:.4f} | lr {learning_rate:.2e} | "
                             f"grad norm {metrics['train/grad_norm']:.3f} | "
                             f"{metrics['train/tokens_per_second']:,.0f} tokens/s | "
                             f"ETA {format_duration((total_steps - step) * elapsed / interval_steps)}")
                    progress.set_postfix(loss=f"{metrics['train/loss']:.4f}")
                    tracker.log(metrics, step=step)
                    loss_sum.zero_()
                    grad_norm_sum.zero_()
                    interval_steps = interval_tokens = 0
                    interval_start = time.perf_counter()

                evaluating = step % config.eval_steps == 0 or step == total_steps
                saving = step % config.save_steps == 0 or step == total_steps or stop.requested
                if (evaluating or saving) and interval_steps:
                    check_finite(loss_sum.item(), step)  # a diverged model is neither evaluated nor saved
                if evaluating:
                    metrics = run_evaluation(model, datasets["val"], tokenizer, config, device, precision, "val")
                    check_finite(metrics["loss"], step)  # the last update can break weights after a finite loss
                    tracker.log({f"val/{k}": metrics[k] for k in ("loss", "token_accuracy", "exact_match")}, step=step)
                    if metrics["exact_match"] > state["best_exact_match"]:
                        state["best_exact_match"] = metrics["exact_match"]
                        save_best_model(model, state, metrics, config)
                    interval_start = time.perf_counter()  # evaluation time is not training throughput

                if saving:
                    save_training_checkpoint({**state, "model": model.state_dict(),
                                              "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()},
                                             config)
                if stop.requested:
                    log.warning(f"stopped at step {step}/{total_steps}; run the same command to resume")
                    tracker.finish()
                    return None

    # End: final weights, then the best model (by val exact match) on the held-out test split
    ckpt.save_atomic(model.state_dict(), os.path.join(config.output_dir, FINAL_MODEL_FILE))
    best = ckpt.load_checkpoint(os.path.join(config.output_dir, ckpt.BEST_MODEL))
    model.load_state_dict(best["model"])
    test_metrics = run_evaluation(model, datasets["test"], tokenizer, config, device, precision, "test")
    test_metrics.update(model_file=ckpt.BEST_MODEL, model_step=best["step"])
    write_json(test_results_path, test_metrics)
    tracker.set_summary({f"test/{k}": test_metrics[k] for k in ("loss", "token_accuracy", "exact_match")})
    tracker.finish()
    log.info(f"done: test exact match {test_metrics['exact_match']:.4f}; results in {test_results_path}")
    return test_metrics
