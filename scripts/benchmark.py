"""Measure training and evaluation speed on this machine, side by side in one process; print tables, write JSON.

    python scripts/benchmark.py               # CPU: sizes x fp32/bf16 x batch 32/128, eval, data, time to 99% (add2)
    python scripts/benchmark.py --compile     # also torch.compile rows
    python scripts/benchmark.py --parts training --sizes small --batch-sizes 32,256
    python scripts/benchmark.py --parts data-parallel      # train.py on 1 process against torchrun on 2
    python scripts/benchmark.py --parts padding            # numbers of 1-10 digits: shuffled or grouped batches
    python scripts/benchmark.py --parts long-evaluation    # peak memory of evaluation by operand length (abacus)
    python scripts/benchmark.py --parts time-to-accuracy --speedruns add2,add10,lengthgen   # speedruns, side by side

MFU counts 6 x parameters x tokens per training step against the matrix-product peak measured in the same run.
"""

import argparse
import contextlib
import json
import logging
import os
import tempfile

import torch

from math_llm import benchmarking as bench
from math_llm.checkpoint import TRAINING_CONFIG_FILE, load_model
from math_llm.cli import run_main
from math_llm.data import SPLITS, ArithmeticDataset, read_split, split_path, write_splits
from math_llm.data_generation import DataConfig, generate_splits
from math_llm.errors import ConfigError
from math_llm.files import write_json
from math_llm.logging_setup import setup_logging
from math_llm.model import MODEL_SIZES
from math_llm.runtime import DEVICES, machine_description, select_device
from math_llm.tokenizer import Tokenizer

log = logging.getLogger("math_llm.benchmark")
log.setLevel(logging.INFO)  # also while the package's other loggers are quietened
PARTS = ("training", "data", "padding", "time-to-accuracy", "evaluation", "data-parallel", "long-evaluation")
DEFAULTS = {  # per device type: what fits a 2-core CPU in minutes, and what loads an H100
    "cpu": dict(precisions="fp32,bf16", batch_sizes="32,128", matmul_size=2048),
    "cuda": dict(precisions="fp32,fp16,bf16", batch_sizes="256,1024,4096", matmul_size=8192),
}


def comma_list(text):
    return [item for item in text.split(",") if item]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto picks CUDA when present (default: %(default)s)")
    parser.add_argument("--parts", default=",".join(PARTS), help="what to measure (default: %(default)s)")
    parser.add_argument("--sizes", default=",".join(MODEL_SIZES), help="model sizes (default: %(default)s)")
    parser.add_argument("--precisions", help="fp32, bf16, fp16 (CUDA) (default: fp32,bf16 on CPU, all on CUDA)")
    parser.add_argument("--batch-sizes", help="training batch sizes (default: 32,128 on CPU; 256,1024,4096 on CUDA)")
    parser.add_argument("--compile", action="store_true", help="also measure each row with torch.compile")
    parser.add_argument("--profile", action="store_true",
                        help="after timing, profile each row (torch.profiler) and show where its step time goes")
    parser.add_argument("--steps", type=int, default=5,
                        help="timed training steps per row and round (default: %(default)s)")
    parser.add_argument("--padding-examples", type=int, default=20_000,
                        help="problems of the padding part's dataset (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds over all rows, interleaved so that noise hits all alike (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: %(default)s)")
    parser.add_argument("--matmul-size", type=int,
                        help="side of the square matrices of the peak measurement (default: 2048 CPU, 8192 CUDA)")
    parser.add_argument("--eval-batch-size", type=int, default=256,
                        help="batch of the KV-cached decoder (default: %(default)s)")
    parser.add_argument("--generation-examples", type=int, default=1_000_000,
                        help="problems to generate in the data part (default: %(default)s)")
    parser.add_argument("--data-parallel-processes", type=int,
                        help="processes of the data-parallel row (default: 2 on CPU, every GPU on CUDA)")
    parser.add_argument("--data-parallel-size", default="small",
                        help="model size of the data-parallel row (default: %(default)s)")
    parser.add_argument("--data-parallel-batch-size", type=int, default=32,
                        help="per-process batch of the data-parallel row (default: %(default)s)")
    parser.add_argument("--long-lengths", default="10,30,100,200,250",
                        help="operand digits of the long-evaluation part (default: %(default)s)")
    parser.add_argument("--long-uncapped-up-to", type=int, default=200,
                        help="long-evaluation: also measure without the cap on attention scores up to this many "
                             "digits (beyond, a batch of --eval-batch-size takes gigabytes) (default: %(default)s)")
    parser.add_argument("--long-model", metavar="RUN",
                        help="long-evaluation: the abacus model to evaluate (a run dir or checkpoint), e.g. "
                             "checkpoints/lengthgen_10x/seed-1 (default: an untrained tiny one)")
    parser.add_argument("--long-problems", type=int, default=256,
                        help="problems per length of the long-evaluation part (default: %(default)s)")
    parser.add_argument("--speedruns", default="add2",
                        help="time-to-accuracy: the speedruns to measure against their baseline recipes, of "
                             f"{', '.join(bench.SPEEDRUNS)} (default: %(default)s, about a minute; add10 takes about "
                             "10 minutes, lengthgen about 35, mul3x3 about 2.5 hours)")
    parser.add_argument("--seeds", help="time-to-accuracy: seeds of every run (default: each speedrun recipe's own)")
    parser.add_argument("--runs-dir", help="time-to-accuracy: keep the runs in <runs-dir>/<recipe>/seed-<seed>, an "
                                           "empty or new directory (default: a temporary one, deleted at the end)")
    parser.add_argument("--data-root", default="data",
                        help="time-to-accuracy: where the recipes' datasets are, or are generated (default: "
                             "%(default)s)")
    parser.add_argument("--output-file", help="JSON results (default: logs/benchmark-<device>.json)")
    return parser


def measure_training(args, device, dataset, vocab_size):
    """Every row is built and warmed up (its peak memory measured then: in this process on CUDA, in a fresh one on
    CPU), then all rows are timed in interleaved rounds; each row reports the median over its steps of all rounds."""
    rows = []
    for model_size in comma_list(args.sizes):
        for precision in comma_list(args.precisions):
            for batch_size in map(int, comma_list(args.batch_sizes)):
                for compile in ((False, True) if args.compile else (False,)):
                    with bench.PeakMemory(device) as memory:
                        row = bench.TrainingRow(model_size, precision, batch_size, dataset, vocab_size, device,
                                                compile)
                        row.run(args.warmup, timed=False)
                    row.peak_memory_mb = (memory.megabytes if device.type == "cuda" else
                                          bench.cpu_training_peak_memory_mb(row, dataset, vocab_size, args.warmup))
                    rows.append(row)
    # The matrix-product peak is measured in every round too, beside the rows, and its best round is the peak.
    precisions = comma_list(args.precisions)
    peak_rounds = {precision: [] for precision in precisions}
    for round_index in range(args.rounds):
        for precision in precisions:
            peak_rounds[precision].append(bench.matmul_peak(device, precision, args.matmul_size))
        log.info(f"training rows: timing round {round_index + 1}/{args.rounds}")
        for row in rows:
            row.run(args.steps)
    peaks = {precision: max(flops) for precision, flops in peak_rounds.items()}
    for precision, flops in peak_rounds.items():
        log.info(f"{args.matmul_size}x{args.matmul_size} matrix product, {precision}: best round "
                 f"{peaks[precision] / 1e9:,.0f} GFLOP/s (rounds: {', '.join(f'{f / 1e9:,.0f}' for f in flops)})")
    results = []
    for row in rows:
        result = {**row.result(peaks[row.precision]), "peak_memory_mb": row.peak_memory_mb}
        if args.profile:
            result["profile"] = row.profile(args.steps)
        results.append(result)
        log.info(f"{row.model_size:>6} {row.precision} batch {row.batch_size:>5}{' compiled' if row.compile else ''}: "
                 f"{result['step_ms']:8.1f} ms/step {result['tokens_per_second']:>10,.0f} tokens/s "
                 f"MFU {result['mfu']:6.1%} | data loading {result['data_loading_share']:.2%} of the step | "
                 f"peak memory {result['peak_memory_mb']:,.0f} MB | first step {result['first_step_seconds']:.1f} s")
        for operator in result.get("profile", []):
            log.info(f"    {operator['share']:6.1%} {operator['ms_per_step']:8.2f} ms/step "
                     f"{operator['calls_per_step']:6.0f} calls/step  {operator['operator']}")
    return peaks, results


def measure_padding(args, device):
    """Training on numbers of 1-10 digits (reversed-all, the length-generalisation data), shuffled batches against
    --group-by-length."""
    config = DataConfig(num_examples=args.padding_examples, max_digits=10, format="reversed-all", test_only=True)
    examples = generate_splits(config)["test"]
    dataset = ArithmeticDataset(examples, Tokenizer(), metadata={"format": config.format}).to(device)
    results = bench.padding_cost(dataset, device, batch_size=128, rounds=args.rounds)
    for name, row in results.items():
        log.info(f"padding, {args.padding_examples} problems of 1-10 digits, tiny, batch 128, {name}: "
                 f"{row['epoch_seconds']:.2f} s per epoch (median of {args.rounds}), {row['tokens_per_epoch']:,} "
                 f"tokens computed for {row['answer_and_prompt_tokens']:,} tokens of data")
    return results


def measure_evaluation(args, device, run_dir):
    """A model trained by the time-to-accuracy part, on every problem of its data (train, val and test)."""
    trained = load_model(run_dir, device)
    with open(os.path.join(run_dir, TRAINING_CONFIG_FILE)) as f:
        data_dir = json.load(f)["train_config"]["data_dir"]
    problems = [text for split in SPLITS for text in read_split(split_path(data_dir, split))[0]]
    dataset = ArithmeticDataset(problems, trained.tokenizer,
                                metadata={"format": trained.data_format.name}).to(device)
    result = bench.generation_speed(trained.model, dataset, trained.tokenizer, device, args.eval_batch_size)
    log.info(f"evaluation of {result['num_problems']:,} problems: KV-cached batch {args.eval_batch_size} "
             f"{result['cached_problems_per_second']:,.0f} problems/s, naive (one at a time, full recompute) "
             f"{result['naive_problems_per_second']:,.0f} problems/s: {result['speedup']:.1f}x; identical answers: "
             f"{result['identical']}; exact match {result['exact_match']:.4f}")
    return result


def measure_time_to_accuracy(args, device, parts, results):
    """Each speedrun of --speedruns against its baseline recipe, seed by seed (bench.speedrun_rows); with the
    evaluation part, the generation speed of the first baseline model of add2 (fastest.yaml)."""
    rows = []
    with contextlib.nullcontext(args.runs_dir) if args.runs_dir else tempfile.TemporaryDirectory() as output_root:
        for name in comma_list(args.speedruns):
            speedrun = bench.SPEEDRUNS[name]
            log.info(f"time to accuracy, {name}: {speedrun.recipe} against {speedrun.baseline} ...")
            row = bench.speedrun_rows(name, args.seeds and list(map(int, comma_list(args.seeds))), args.data_root,
                                      output_root, device)
            rows.append(row)
            for run in row["runs"]:
                log.info(f"  {run['recipe']} seed {run['seed']}: {describe_seconds(run['seconds'])} of training "
                         f"steps (step {run['step']}) | " + " | ".join(
                             f"{set_name} {value:.2%}" for set_name, value in run["exact_match"].items()) +
                         f" | {'met' if run['met'] else 'NOT MET'}")
            log.info(f"{name}: median {describe_seconds(row['medians'][speedrun.recipe])} ({speedrun.recipe}) "
                     f"against {describe_seconds(row['medians'][speedrun.baseline])} ({speedrun.baseline}): " +
                     (f"{row['ratio']:.1f}x faster" if row["ratio"] else "no ratio"))
            if name == "add2" and "evaluation" in parts and "evaluation" not in results:
                results["evaluation"] = measure_evaluation(
                    args, device, os.path.join(output_root, speedrun.baseline, f"seed-{row['seeds'][0]}"))
    log.info("time to accuracy, as docs/speed.md shows it:\n" + speedrun_table(rows))
    return rows


def speedrun_table(rows):
    """docs/speed.md's table of the speedruns: per recipe, each seed's seconds (a miss marked), the median and the
    ratio of the baseline's median to the speedrun's."""
    lines = ["| Target | Recipe | Seconds to it, per seed | Median | Held-out exact match, lowest seed | Speedup |",
             "|---|---|---|---:|---|---:|"]
    for row in rows:
        target = f"{row['exact_match']:.1%} on {', '.join(row['sets'])}, <= {row['seconds']:g} s"
        for recipe in (row["baseline"], row["recipe"]):
            runs = [run for run in row["runs"] if run["recipe"] == recipe]
            per_seed = ", ".join(("missed" if run["seconds"] is None else f"{run['seconds']:.2f}") +
                                 ("" if run["met"] or run["seconds"] is None else " (missed)") for run in runs)
            worst = min(min(run["exact_match"].values()) for run in runs)
            speedup = f"**{row['ratio']:.1f}x**" if recipe == row["recipe"] and row["ratio"] else ""
            lines.append(f"| {target if recipe == row['baseline'] else ''} | `{recipe}` | {per_seed} | "
                         f"{describe_seconds(row['medians'][recipe])} | {worst:.2%} | {speedup} |")
    return "\n".join(lines)


def describe_seconds(seconds):
    return "not reached" if seconds is None else f"{seconds:.2f} s"


def measure_long_evaluation(args, device):
    """Peak memory of evaluate.py's work on long additions, by length, with the cap on attention scores per batch
    (model.batch_rows) and, up to --long-uncapped-up-to digits, without it."""
    rows = []
    for num_digits in map(int, comma_list(args.long_lengths)):
        for capped in (True, False) if num_digits <= args.long_uncapped_up_to else (True,):
            row = bench.long_evaluation_memory(args.long_model, num_digits, args.long_problems, args.eval_batch_size,
                                               capped, device)
            rows.append(row)
            log.info(f"evaluating {row['problems']} problems of {num_digits} digits ({row['tokens']} tokens), "
                     f"{'capped' if capped else 'uncapped'}: batches of {row['rows_per_batch']}, peak "
                     f"{row['peak_mb']:,.0f} MB, {row['seconds']:.1f} s, exact match {row['exact_match']:.2%}")
    return rows


def measure_data_parallel(args, device, splits, data_config):
    """train.py on 1 process, torchrun on N with the same per-process batch, and 1 process with the same global
    batch as the N: the last pair isolates what data parallelism itself costs (all-reduce, extra processes)."""
    processes = args.data_parallel_processes or (torch.cuda.device_count() if device.type == "cuda" else 2)
    batch_size = args.data_parallel_batch_size
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        write_splits(os.path.join(directory, "data"), splits, data_config)
        for count, batch in ((1, batch_size), (processes, batch_size), (1, batch_size * processes)):
            row = bench.data_parallel_throughput(os.path.join(directory, "data"),
                                                 os.path.join(directory, f"run-{count}-{batch}"), count,
                                                 args.data_parallel_size, batch)
            rows.append(row)
            log.info(f"data parallel: {count} process(es) x batch {batch} ({row['model_size']}): "
                     f"{row['tokens_per_second']:,.0f} tokens/s")
    same_batch, same_global_batch = (rows[1]["tokens_per_second"] / rows[i]["tokens_per_second"] for i in (0, 2))
    log.info(f"data parallel: {processes} processes give {same_batch:.2f}x the tokens/s of one at the same "
             f"per-process batch, and {same_global_batch:.2f}x that of one process with the same global batch")
    return rows


def target_checks(results):
    """The speed issue's targets, as (target, measured, met) for whatever this run measured."""
    checks = []
    rows = [row for row in results.get("training", []) if not row["compile"]]
    small_fp32 = [row for row in rows if row["model_size"] == "small" and row["precision"] == "fp32"]
    for row in small_fp32:
        if row["batch_size"] == 32:
            checks.append(("small, fp32, batch 32: MFU >= 70% of the fp32 matmul peak", f"{row['mfu']:.1%}",
                           row["mfu"] >= 0.7))
        bf16 = [other for other in rows if other["model_size"] == "small" and other["precision"] == "bf16"
                and other["batch_size"] == row["batch_size"]]
        if bf16 and row["batch_size"] >= 64:
            ratio = bf16[0]["tokens_per_second"] / row["tokens_per_second"]
            checks.append((f"small, batch {row['batch_size']}: bf16 >= 2x fp32 tokens/s", f"{ratio:.2f}x",
                           ratio >= 2))
    if rows:
        worst = max(row["data_loading_share"] for row in rows)
        checks.append(("data loading < 5% of a training step (worst row)", f"{worst:.2%}", worst < 0.05))
    if "data_generation" in results:
        seconds = results["data_generation"]["seconds"]
        checks.append((f"generating {results['data_generation']['num_examples']:,} problems < 15 s", f"{seconds:.1f} s",
                       seconds < 15))
    if "evaluation" in results:
        evaluation = results["evaluation"]
        checks.append(("evaluation >= 20x naive problems/s, identical answers",
                       f"{evaluation['speedup']:.1f}x, identical: {evaluation['identical']}",
                       evaluation["speedup"] >= 20 and evaluation["identical"]))
    for row in results.get("time_to_accuracy", []):
        seconds = row["medians"][row["recipe"]]
        checks.append((f"{row['name']}: {row['recipe']} reaches {row['exact_match']:.1%} on "
                       f"{', '.join(row['sets'])} in <= {row['seconds']:g} s of training steps (median of "
                       f"{len(row['runs']) // 2})", describe_seconds(seconds) +
                       (f", {row['ratio']:.1f}x faster than {row['baseline']}" if row["ratio"] else ""),
                       seconds is not None and seconds <= row["seconds"]))
    return [{"target": target, "measured": measured, "met": bool(met)} for target, measured, met in checks]


def main():
    args = build_parser().parse_args()
    setup_logging()
    device = select_device(args.device)
    for key, value in DEFAULTS[device.type].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    parts = comma_list(args.parts)
    if unknown := set(parts) - set(PARTS):
        raise ConfigError(f"--parts: unknown {', '.join(sorted(unknown))} (choose from {', '.join(PARTS)})")
    if "evaluation" in parts and ("time-to-accuracy" not in parts or "add2" not in comma_list(args.speedruns)):
        raise ConfigError("--parts evaluation needs time-to-accuracy with the add2 speedrun, which trains the model "
                          "it evaluates")
    if "time-to-accuracy" in parts and args.runs_dir and os.path.isdir(args.runs_dir) and os.listdir(args.runs_dir):
        raise ConfigError(f"--runs-dir {args.runs_dir}: not empty; the runs found there would be resumed, not timed "
                          f"afresh (give an empty or new directory)")
    if unknown := set(comma_list(args.speedruns)) - set(bench.SPEEDRUNS):
        raise ConfigError(f"--speedruns: unknown {', '.join(sorted(unknown))} (choose from "
                          f"{', '.join(bench.SPEEDRUNS)})")
    output_file = args.output_file or os.path.join("logs", f"benchmark-{device.type}.json")
    results = {"machine": machine_description(device), "torch": torch.__version__, "device": device.type,
               "arguments": vars(args)}
    log.info(f"benchmark on {results['machine']} (torch {torch.__version__})")

    data_config = DataConfig()  # the default task: 2-digit addition, all 10,000 problems
    splits = generate_splits(data_config)
    tokenizer = Tokenizer()
    datasets = {split: ArithmeticDataset(splits[split], tokenizer).to(device) for split in SPLITS}

    if "training" in parts:
        results["matmul_peak_flops"], results["training"] = measure_training(args, device, datasets["train"],
                                                                             len(tokenizer))

    if "data" in parts:
        seconds = bench.data_generation_seconds(args.generation_examples, max_digits=6)
        results["data_generation"] = {"num_examples": args.generation_examples, "max_digits": 6, "seconds": seconds}
        log.info(f"scripts/generate_data.py --num-examples {args.generation_examples} --max-digits 6: {seconds:.1f} s "
                 f"wall time")

    if "padding" in parts:
        results["padding"] = measure_padding(args, device)

    if "time-to-accuracy" in parts:
        results["time_to_accuracy"] = measure_time_to_accuracy(args, device, parts, results)

    if "data-parallel" in parts:
        results["data_parallel"] = measure_data_parallel(args, device, splits, data_config)

    if "long-evaluation" in parts:
        results["long_evaluation"] = measure_long_evaluation(args, device)

    results["targets"] = target_checks(results)
    for check in results["targets"]:
        log.info(f"{'met    ' if check['met'] else 'NOT MET'} {check['target']}: {check['measured']}")
    write_json(output_file, results)
    log.info(f"results written to {output_file}")


if __name__ == "__main__":
    run_main(main)
