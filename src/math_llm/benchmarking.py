"""Speed measurements for scripts/benchmark.py: each one times the code that train.py and evaluate.py run.

Times are medians over repeated runs after warm-up; CUDA work is synchronised before each clock reading.
"""

import itertools
import json
import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import torch

from math_llm import model as model_module
from math_llm.checkpoint import load_model
from math_llm.data import ArithmeticDataset
from math_llm.data_generation import DataConfig, generate_splits
from math_llm.decoding import dataset_answers, naive_answers
from math_llm.metrics import split_metrics
from math_llm.model import ModelConfig, Transformer, batch_rows
from math_llm.recipes import load_recipe
from math_llm.runtime import select_precision, synchronize
from math_llm.tokenizer import Tokenizer
from math_llm.batches import epoch_order, step_batches
from math_llm.flags import config_from_flags
from math_llm.trainer import TrainConfig, build_optimizer, compile_for_training, train_step

PRECISION_FLAGS = {"fp32": {}, "bf16": {"bf16": True}, "fp16": {"fp16": True}}
MATMUL_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # above src/math_llm/
SCRIPTS_DIR = os.path.join(REPO_ROOT, "scripts")


def median_seconds(function, device, repeats, warmup):
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class PeakMemory:
    """Peak memory of what happens inside the block, in MB: allocated memory on CUDA; on CPU, the growth of the
    peak resident set over the resident set at the start (Linux: /proc/self/clear_refs resets the peak)."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.start = self._cpu_kilobytes("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.megabytes = (torch.cuda.max_memory_allocated(self.device) - self.start) / 2**20
        else:
            self.megabytes = (self._cpu_kilobytes("VmHWM") - self.start) / 1024

    @staticmethod
    def _cpu_kilobytes(field):
        with open("/proc/self/status") as f:
            return int(next(line.split()[1] for line in f if line.startswith(field + ":")))


def _row_memory(model_size, precision, batch_size, examples, vocab_size, steps, compile):
    dataset = ArithmeticDataset(examples, Tokenizer())
    with PeakMemory(torch.device("cpu")) as memory:
        TrainingRow(model_size, precision, batch_size, dataset, vocab_size, torch.device("cpu"), compile).run(steps)
    return memory.megabytes


def cpu_training_peak_memory_mb(row, dataset, vocab_size, steps):
    """Peak memory of a row's model, optimizer state and `steps` training steps, measured in a fresh process: in a
    shared one, memory freed by earlier rows is reused and the growth of the resident set says little."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_row_memory, (row.model_size, row.precision, row.batch_size, dataset.examples, vocab_size,
                                        steps, row.compile))


def matmul_peak(device, precision, size, repeats=10):
    """FLOP/s of a size x size matrix product: the practical peak that MFU is measured against. Through F.linear,
    the op of the model's layers: without native bf16, a CPU runs a bf16 `a @ b` on a far slower path (speed.md)."""
    a, b = (torch.randn(size, size, device=device, dtype=MATMUL_DTYPES[precision]) for _ in range(2))
    return 2 * size**3 / median_seconds(lambda: torch.nn.functional.linear(a, b), device, repeats, warmup=3)


class TrainingRow:
    """One configuration's model, optimizer and stream of real batches, stepped with `train_step` in rounds, so
    that rows can be timed interleaved (machine noise then hits every row alike)."""

    def __init__(self, model_size, precision, batch_size, dataset, vocab_size, device, compile=False,
                 group_by_length=False):
        torch.manual_seed(0)
        self.model_size, self.precision, self.batch_size, self.compile = model_size, precision, batch_size, compile
        self.device = device
        self.config = TrainConfig(batch_size=batch_size, compile=compile)
        self.precision_config = select_precision(device, **PRECISION_FLAGS[precision])
        max_length = max(ModelConfig.max_length, dataset.tokens.shape[1])
        self.model = Transformer(ModelConfig(model_size, vocab_size=vocab_size, max_length=max_length)).to(device)
        self.optimizer = build_optimizer(self.model, self.config)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision_config.use_grad_scaler)
        self.step_model = compile_for_training(self.model) if compile else self.model
        grouping = (dataset.lengths, batch_size) if group_by_length else ()
        self.batches = itertools.chain.from_iterable(
            step_batches(dataset, epoch_order(len(dataset), 0, epoch, *grouping), batch_size)
            for epoch in itertools.count())
        self.step_seconds, self.loading_seconds, self.tokens = [], [], []
        self.first_step_seconds = None

    def run(self, steps, timed=True):
        for _ in range(steps):
            synchronize(self.device)
            start = time.perf_counter()
            micro_batches, _ = next(self.batches)
            loaded = time.perf_counter()
            train_step(self.step_model, self.optimizer, self.scaler, micro_batches, 1e-4, self.config,
                       self.device, self.precision_config)
            synchronize(self.device)
            end = time.perf_counter()
            if self.first_step_seconds is None:
                self.first_step_seconds = end - start  # includes compilation with --compile
            if timed:
                self.step_seconds.append(end - start)
                self.loading_seconds.append(loaded - start)
                self.tokens.append(sum(inputs.numel() for inputs, *_ in micro_batches))

    def profile(self, steps, top=12):
        """torch.profiler over `steps` steps: the top operators by own time, per step, and their share of the step."""
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as profiler:
            self.run(steps, timed=False)
        events = profiler.key_averages()
        time_attribute = "self_device_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        total = sum(getattr(event, time_attribute) for event in events)
        ranked = sorted(events, key=lambda event: getattr(event, time_attribute), reverse=True)[:top]
        return [{"operator": event.key, "ms_per_step": getattr(event, time_attribute) / 1000 / steps,
                 "share": getattr(event, time_attribute) / total, "calls_per_step": event.count / steps}
                for event in ranked]

    def result(self, peak_flops):
        num_parameters = self.model.num_parameters()
        tokens_per_second = statistics.median(n / s for n, s in zip(self.tokens, self.step_seconds))
        return {"model_size": self.model_size, "precision": self.precision, "batch_size": self.batch_size,
                "compile": self.compile, "num_parameters": num_parameters, "timed_steps": len(self.step_seconds),
                "step_ms": 1000 * statistics.median(self.step_seconds), "tokens_per_second": tokens_per_second,
                "mfu": 6 * num_parameters * tokens_per_second / peak_flops,
                "data_loading_share": sum(self.loading_seconds) / sum(self.step_seconds),
                "first_step_seconds": self.first_step_seconds}


def padding_cost(dataset, device, batch_size, rounds):
    """Seconds and tokens computed per epoch of `tiny` on `dataset`, with shuffled batches and with --group-by-length,
    the two timed epoch by epoch in turn (median over rounds)."""
    rows = {"shuffled": TrainingRow("tiny", "fp32", batch_size, dataset, 13, device),
            "grouped by length": TrainingRow("tiny", "fp32", batch_size, dataset, 13, device, group_by_length=True)}
    steps_per_epoch = -(-len(dataset) // batch_size)
    for row in rows.values():
        row.run(steps_per_epoch, timed=False)  # first-call costs, and the same number of epochs before each round
    epochs = {name: [] for name in rows}
    for _ in range(rounds):
        for name, row in rows.items():
            row.step_seconds.clear()
            row.tokens.clear()
            row.run(steps_per_epoch)
            epochs[name].append((sum(row.step_seconds), sum(row.tokens)))
    return {name: {"epoch_seconds": statistics.median(seconds for seconds, _ in runs), "tokens_per_epoch": runs[0][1],
                   "answer_and_prompt_tokens": int((dataset.lengths - 1).sum())}
            for name, runs in epochs.items()}


def generation_speed(model, dataset, tokenizer, device, batch_size):
    """Problems/s of evaluation's batched KV-cached greedy decoding and of the naive decoder, and whether they
    produce identical answers (fp32)."""
    model.eval()
    fp32 = select_precision(device)
    dataset_answers(model, dataset.subset(range(batch_size)), tokenizer, batch_size, device, fp32)  # first-call costs
    timed = {}
    for name, decode in (("cached", lambda: dataset_answers(model, dataset, tokenizer, batch_size, device, fp32)),
                         ("naive", lambda: naive_answers(model, dataset, tokenizer, device))):
        synchronize(device)
        start = time.perf_counter()
        timed[name] = decode()
        synchronize(device)
        timed[name + "_seconds"] = time.perf_counter() - start
    return {"num_problems": len(dataset), "batch_size": batch_size,
            "cached_problems_per_second": len(dataset) / timed["cached_seconds"],
            "naive_problems_per_second": len(dataset) / timed["naive_seconds"],
            "speedup": timed["naive_seconds"] / timed["cached_seconds"],
            "identical": timed["cached"] == timed["naive"],
            "exact_match": sum(p == a for p, a in zip(timed["cached"], dataset.answers)) / len(dataset)}


def _long_evaluation(model_path, num_digits, num_problems, batch_size, capped, device_type):
    if not capped:  # this process only: it is a fresh one
        model_module.ATTENTION_SCORES_LIMIT = 1 << 62
    torch.manual_seed(0)
    device = torch.device(device_type)
    if model_path:
        trained = load_model(model_path, device)
        model, tokenizer, data_format = trained.model, trained.tokenizer, trained.data_format.name
    else:
        tokenizer, data_format = Tokenizer(), "reversed-all"
        model = Transformer(ModelConfig("tiny", vocab_size=len(tokenizer), pos_encoding="abacus",
                                        digit_positions=num_digits + 3, **tokenizer.digit_place_ids())).to(device)
    data_config = DataConfig(num_examples=num_problems, min_digits=num_digits, max_digits=num_digits,
                             sampling="same-length", format=data_format, test_only=True)
    dataset = ArithmeticDataset(generate_splits(data_config)["test"], tokenizer, metadata={"format": data_format})
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        results = split_metrics(model.eval(), dataset, tokenizer, batch_size, device, select_precision(device))
        synchronize(device)
        seconds = time.perf_counter() - start
    longest = int(dataset.lengths.max())
    return {"digits": num_digits, "capped": capped, "problems": num_problems, "tokens": longest,
            "rows_per_batch": batch_rows(model.config, batch_size, longest) if capped else batch_size,
            "peak_mb": memory.megabytes, "seconds": seconds, "exact_match": results["exact_match"]}


def long_evaluation_memory(model_path, num_digits, num_problems, batch_size, capped, device):
    """Peak memory and seconds of evaluating `num_problems` additions of two `num_digits`-digit numbers as
    evaluate.py does (teacher-forced loss, then KV-cached greedy decoding) on `device`, in a fresh process (as
    cpu_training_peak_memory_mb; PeakMemory says what is measured on each device type), with the abacus model at
    `model_path` (a run dir or checkpoint), or else an untrained `tiny` one (whose answers may end early: its seconds
    say little). capped=False lifts ATTENTION_SCORES_LIMIT, so that every batch holds `batch_size` problems whatever
    their length."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_long_evaluation, (model_path, num_digits, num_problems, batch_size, capped, device.type))


def data_generation_seconds(num_examples, max_digits):
    """Wall time of `scripts/generate_data.py` as a user runs it: start-up, sampling, writing, summarising."""
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        run_quietly([sys.executable, os.path.join(SCRIPTS_DIR, "generate_data.py"), "--num-examples",
                     str(num_examples), "--max-digits", str(max_digits), "--output-dir", directory])
        return time.perf_counter() - start


def run_quietly(command):
    """Runs a script of this repo with its output captured; a failure raises with the end of its stderr."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} ... exited {result.returncode}: {result.stderr[-2000:]}")


def data_parallel_throughput(data_dir, output_dir, processes, model_size, batch_size, num_epochs=1):
    """Training tokens/s of `train.py` itself with `processes` data-parallel processes (torchrun, gloo on CPU) or
    one plain process: the median over its logged intervals after the first, read from its trainer state."""
    train_script = os.path.join(SCRIPTS_DIR, "train.py")
    launcher = ([os.path.join(os.path.dirname(sys.executable), "torchrun"), "--standalone", "--nproc_per_node",
                 str(processes)]
                if processes > 1 else [sys.executable])
    run_quietly([*launcher, train_script, "--data-dir", data_dir, "--output-dir", output_dir, "--model-size",
                 model_size, "--batch-size", str(batch_size), "--num-epochs", str(num_epochs), "--logging-steps",
                 "10", "--eval-steps", str(10**9), "--save-steps", str(10**9), "--no-wandb"])
    with open(os.path.join(output_dir, "trainer_state.json")) as f:
        history = json.load(f)["log_history"]
    rates = [entry["train/tokens_per_second"] for entry in history if "train/tokens_per_second" in entry]
    return {"processes": processes, "model_size": model_size, "batch_size_per_process": batch_size,
            "tokens_per_second": statistics.median(rates[1:] or rates)}


@dataclass(frozen=True)
class Speedrun:
    """A time-to-accuracy target: `recipe` reaches it fast, `baseline` is the recipe it is measured against (side by
    side, same seeds); a run counts only where every one of `sets` (the held-out test split or a recipe's evaluation
    sets) reaches `exact_match`. `stop_at`: both recipes' runs end at that exact match on the set that chooses their
    checkpoint (--stop-at-exact-match), and the time is the training seconds until then; None (length
    generalisation, judged on lengths no run sees): each runs its whole schedule, and that is the time."""
    recipe: str
    baseline: str
    exact_match: float
    seconds: float  # the target for the recipe's median
    sets: tuple = ("test",)
    stop_at: float | None = None


LENGTH_BANDS = ("lengths_11_15", "lengths_16_20", "lengths_21_25", "lengths_26_30")
SPEEDRUNS = {
    "add2": Speedrun("speedrun_add2", "fastest", 0.99, 2, stop_at=0.995),
    # 2,000 selection problems all right before 10,000 held-out ones are scored
    "add10": Speedrun("speedrun_add10", "add10", 0.999, 20, ("uniform",), stop_at=1.0),
    "lengthgen": Speedrun("speedrun_lengthgen", "lengthgen_abacus", 0.99, 180, LENGTH_BANDS),
    "mul3x3": Speedrun("speedrun_mul3x3", "mul3x3", 0.99, 900, stop_at=0.995),
}


def recipe_path(name):
    return os.path.join(REPO_ROOT, "recipes", f"{name}.yaml")


def speedrun_seed(speedrun, recipe, seed, data_root, output_root, device, flags=()):
    """One seed of `recipe` (the speedrun's or its baseline) run by run_recipe.py in a fresh process, recording
    nothing in results/, with training `flags` besides the recipe's: {recipe, seed, seconds (of training steps to the
    target, see Speedrun), step, the exact match on each of the speedrun's sets, met}."""
    stop = ["--stop-at-exact-match", str(speedrun.stop_at)] if speedrun.stop_at else []
    run_quietly([sys.executable, os.path.join(SCRIPTS_DIR, "run_recipe.py"), recipe_path(recipe), "--seeds",
                 str(seed), "--data-root", data_root, "--output-root", output_root, "--results-dir",
                 os.path.join(output_root, "results"), "--no-wandb", "--device", device.type, *stop, *flags])
    with open(os.path.join(output_root, recipe, f"seed-{seed}", "run_summary.json")) as f:
        summary = json.load(f)
    training = summary["training"]
    if speedrun.stop_at:  # timed at the evaluation that reached the stop; a run that never did has no time
        reached = training["reached_at"] or {"step": training["steps"], "training_seconds": None}
    else:  # timed over its whole schedule
        reached = {"step": training["steps"], "training_seconds": training["training_seconds"]}
    exact_matches = {name: summary["evaluations"][name]["exact_match"] for name in speedrun.sets}
    return {"recipe": recipe, "seed": seed, "seconds": reached["training_seconds"], "step": reached["step"],
            "exact_match": exact_matches,
            "met": reached["training_seconds"] is not None
                   and all(value >= speedrun.exact_match for value in exact_matches.values())}


def speedrun_rows(name, seeds, data_root, output_root, device):
    """The speedrun `name` (SPEEDRUNS) and its baseline, for `seeds` (None: the speedrun recipe's), alternating so
    that noise hits both alike: the Speedrun's fields, runs (speedrun_seed's), the median seconds of each recipe (a
    run that misses the target counts as infinitely slow; None where most did) and their ratio."""
    speedrun = SPEEDRUNS[name]
    speedrun_recipe = load_recipe(recipe_path(speedrun.recipe))
    seeds = seeds or speedrun_recipe.seeds
    # A run that stops is timed at an evaluation: the baseline evaluates as often as the speedrun (a flag that
    # changes no step), so that neither time is rounded up further than the other's.
    eval_steps = config_from_flags(TrainConfig, speedrun_recipe.train).eval_steps
    flags = {speedrun.baseline: ["--eval-steps", str(eval_steps)] if speedrun.stop_at else [], speedrun.recipe: []}
    runs = [speedrun_seed(speedrun, recipe, seed, data_root, output_root, device, flags[recipe])
            for seed in seeds for recipe in (speedrun.baseline, speedrun.recipe)]

    def median(recipe):
        seconds = statistics.median(run["seconds"] if run["met"] else math.inf
                                    for run in runs if run["recipe"] == recipe)
        return seconds if math.isfinite(seconds) else None
    medians = {recipe: median(recipe) for recipe in (speedrun.baseline, speedrun.recipe)}
    baseline, fast = medians[speedrun.baseline], medians[speedrun.recipe]
    return {"name": name, **asdict(speedrun), "seeds": seeds, "runs": runs, "medians": medians,
            "ratio": baseline / fast if baseline and fast else None}
