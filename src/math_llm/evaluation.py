"""One evaluation path for train.py and evaluate.py alike: a model on a dataset (metrics.py), its edge cases and its
running-sum probe, timed; the report a reader looks at first; the JSON, heatmap and length plot written; and
evaluate.py's whole job, from its config to its files.
"""

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass

from math_llm.checkpoint import BEST_MODEL, load_model
from math_llm.data import SPLITS, ArithmeticDataset, split_path
from math_llm.edge_cases import edge_case_datasets
from math_llm.errors import ConfigError
from math_llm.files import write_json
from math_llm.flags import choice_problems, option
from math_llm.metrics import edge_case_metrics, split_metrics
from math_llm.plots import save_grid_heatmap, save_length_plot
from math_llm.probe import TARGET_NAME, add_running_sums, pooled_rmse, running_sum_readout
from math_llm.run_lock import writable_dir
from math_llm.runtime import DEVICES, precision_flag_problems, select_device, select_precision

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    checkpoint: str = option("checkpoints/best_model.pt", "best_model.pt, a checkpoint-N.pt, or an output dir (its "
                                                          "best_model.pt, else its newest readable checkpoint)")
    data_dir: str | None = option(None, "directory with the split files (default: the one the model was trained "
                                        "on, as its run recorded it)")
    split: str = option("test", "which split of --data-dir to evaluate", choices=SPLITS)
    data_path: str | None = option(None, "evaluate this JSON file instead of a split")
    batch_size: int = option(256, "evaluation batch size")
    device: str = option("auto", "auto picks CUDA when present", choices=DEVICES)
    fp16: bool = option(False, "evaluate under fp16 autocast on CUDA, bf16 autocast on CPU")
    bf16: bool = option(False, "evaluate under bf16 autocast")
    num_mistakes: int = option(10, "wrong answers to print")
    edge_cases: bool = option(True, "score the edge cases too (all-9 operands, carries through every digit, zeros); "
                                    "--no-edge-cases: skip them")
    output_file: str | None = option(None, "where to write the results as JSON (default: beside the checkpoint, "
                                           "eval_<split>.json for a split of the model's own data, else "
                                           "eval_<directory>_<file name>.json, e.g. eval_long_test.json, with "
                                           "_<model file> added for other models than best_model.pt); the "
                                           "heatmap and the plot by length go beside it, as <stem>_heatmap.png and "
                                           "<stem>_by_length.png")

    def __post_init__(self):
        problems = precision_flag_problems(self.fp16, self.bf16) + choice_problems(self)
        if self.batch_size < 1:
            problems.append(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.num_mistakes < 0:
            problems.append(f"--num-mistakes must not be negative, got {self.num_mistakes}")
        if problems:
            raise ConfigError("; ".join(problems))


def evaluate(trained, dataset, edge_sets, batch_size, device, precision, num_mistakes=5):
    """The results of `trained` (a TrainedModel) on `dataset`: its metrics, those of its edge cases (`edge_sets`,
    from edge_case_datasets) and, for a model with a running-sum probe, how well the probe reads; the seconds it
    all took; what was evaluated on what."""
    start = time.perf_counter()
    model, tokenizer = trained.model, trained.tokenizer
    results = split_metrics(model, dataset, tokenizer, batch_size, device, precision, num_mistakes)
    if edge_sets:
        results["edge_cases"] = edge_case_metrics(model, edge_sets, tokenizer, batch_size, device, precision,
                                                  num_mistakes)
    if trained.probe is not None and TARGET_NAME in dataset.extra_targets:
        results["running_sum_probe"] = running_sum_readout(model, trained.probe, dataset, batch_size, device,
                                                           precision)
    results.update(seconds=time.perf_counter() - start, checkpoint=trained.source, data_path=dataset.source,
                   pos_encoding=trained.model.config.pos_encoding, trained_lengths=trained.trained_lengths)
    return results


def summary_line(results, name):
    """'val: exact match 0.9950 | token accuracy ...': the totals of an evaluation in one line."""
    probe = f" | probe rmse {pooled_rmse(results['running_sum_probe']):.2f}" if "running_sum_probe" in results else ""
    return (f"{name}: exact match {results['exact_match']:.4f} | token accuracy {results['token_accuracy']:.4f} | "
            f"loss {results['loss']:.4f}{probe} ({results['num_examples']} problems in {results['seconds']:.2f} s)")


def publish(results, name, output_file, heatmap_file, title, length_plot_file=None):
    """Logs the results (the totals, then log_report) and writes them: as JSON, their heatmap of exact match by
    operand lengths (where they have two-operand cells) and, given a file for it, their exact match by length (where
    they have several lengths, the training lengths shaded). Returns the images written."""
    log.info(summary_line(results, name))
    log_report(results, log, name)
    write_json(output_file, results)
    images = []
    if save_grid_heatmap(results["exact_match_by_operation_and_operand_digits"], heatmap_file, title):
        images.append(heatmap_file)
    if length_plot_file and len(results["exact_match_by_length"]) > 1:
        save_length_plot({results["checkpoint"]: results["exact_match_by_length"]}, length_plot_file,
                         f"{results['pos_encoding']} positions on {name}", results["trained_lengths"])
        images.append(length_plot_file)
    return images


def evaluate_checkpoint(config):
    """What evaluate.py does: load the model, read and check the data (by default its own run's split), evaluate,
    report, write the files. Returns the results."""
    device = select_device(config.device)
    trained = load_model(config.checkpoint, device)
    data_path = config.data_path or split_path(config.data_dir or trained.data_dir or "data", config.split)
    output_file = config.output_file or default_output_file(trained, data_path, config.split)
    writable_dir(os.path.dirname(output_file) or ".", "--output-file")  # before minutes of work
    dataset = ArithmeticDataset.from_file(data_path, trained.tokenizer)
    trained.check_datasets(dataset)
    log.info(f"evaluating {trained.source} (step {trained.step}, {trained.model.num_parameters():,} parameters) on "
             f"{data_path} ({len(dataset)} problems, device {device})")
    if trained.probe is not None:
        add_running_sums(dataset)
    edge_sets = edge_case_datasets(dataset, trained.tokenizer, trained.model) if config.edge_cases else {}
    precision = select_precision(device, config.fp16, config.bf16)
    results = evaluate(trained, dataset, edge_sets, config.batch_size, device, precision, config.num_mistakes)

    name = os.path.splitext(os.path.basename(data_path))[0]
    stem = os.path.splitext(output_file)[0]
    images = publish(results, name, output_file, stem + "_heatmap.png", f"{trained.source} on {data_path}",
                     stem + "_by_length.png")
    log.info(f"results written to {output_file}" + "".join(f"; {image}" for image in images))
    return results


def default_output_file(trained, data_path, split):
    """Where evaluate.py writes the results of `trained` on `data_path` unless told: beside the checkpoint,
    eval_<split>.json for a split of the model's own data, eval_<directory>_<file name>.json for any other file
    (with _<model file> added for a model other than best_model.pt: eval_test_checkpoint-400.json), and a name with
    a hash of the path where that one holds the results of another file: results of different data files never
    overwrite each other."""
    directory, model_file = os.path.split(trained.source)
    own_split = trained.data_dir and same_path(data_path, split_path(trained.data_dir, split))
    parent = os.path.basename(os.path.dirname(os.path.abspath(data_path)))
    name = split if own_split else f"{parent}_{os.path.splitext(os.path.basename(data_path))[0]}"
    if model_file != BEST_MODEL:
        name += f"_{os.path.splitext(model_file)[0]}"
    path = os.path.join(directory, f"eval_{name}.json")
    if results_of_another_file(path, data_path):
        digest = hashlib.sha256(os.path.abspath(data_path).encode()).hexdigest()[:8]
        path = os.path.join(directory, f"eval_{name}_{digest}.json")
    return path


def same_path(first, second):
    return os.path.abspath(first) == os.path.abspath(second)


def results_of_another_file(results_path, data_path):
    """Whether `results_path` holds evaluation results of a data file other than `data_path`."""
    try:
        with open(results_path) as f:
            evaluated = json.load(f).get("data_path")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(evaluated, str) and not same_path(evaluated, data_path)


def scalar_metrics(results, prefix):
    """The results as flat {name: number} for W&B: totals, then each operation, two-operand cell, carry count,
    number of operands, answer digit place, edge case and scratchpad score."""
    metrics = {f"{prefix}/{key}": results[key] for key in ("loss", "token_accuracy", "exact_match")}
    for operator, values in results["exact_match_by_operation"].items():
        metrics[f"{prefix}/exact_match/{operator}"] = values["exact_match"]
    for operator, cells in results["exact_match_by_operation_and_operand_digits"].items():
        metrics.update({f"{prefix}/by_digits/{operator}/{digits}": c["exact_match"] for digits, c in cells.items()
                        if digits.count("x") == 1})  # the heatmap's cells; longer problems by count below
    metrics.update({f"{prefix}/by_length/{n}": c["exact_match"] for n, c in results["exact_match_by_length"].items()})
    by_operands = results["exact_match_by_num_operands"]
    if len(by_operands) > 1:
        metrics.update({f"{prefix}/by_operands/{n}": c["exact_match"] for n, c in by_operands.items()})
    for operator, cells in results["exact_match_by_carries"].items():
        metrics.update({f"{prefix}/by_carries/{operator}/{n}": c["exact_match"] for n, c in cells.items()})
    for operator, places in results["digit_accuracy_by_place"].items():
        metrics.update({f"{prefix}/digit_accuracy/{operator}/{place}": c["accuracy"] for place, c in places.items()})
    metrics.update({f"{prefix}/sign_accuracy/{operator}": c["accuracy"]
                    for operator, c in results["sign_accuracy_by_operation"].items()})
    for name, value in results.get("scratchpad", {}).items():
        metrics[f"{prefix}/scratchpad/{name}"] = value
    if "running_sum_probe" in results:  # in units of the column total
        metrics[f"{prefix}/running_sum_probe/rmse"] = pooled_rmse(results["running_sum_probe"])
        metrics.update({f"{prefix}/running_sum_probe/rmse/{place}": reading["rmse"]
                        for place, reading in results["running_sum_probe"].items()})
    if "edge_cases" in results:
        metrics[f"{prefix}/edge_cases/exact_match"] = results["edge_cases"]["exact_match"]
        metrics.update({f"{prefix}/edge_cases/{kind}": c["exact_match"]
                        for kind, c in results["edge_cases"]["by_kind"].items()})
    return metrics


def length_table(by_length, per_line=10):
    """Exact match (%) by length, as text lines of `per_line` lengths: ['exact match (%) by length 1:100.0 ...']."""
    items = list(by_length.items())
    return ["exact match (%) by length " + " ".join(f"{length}:{100 * cell['exact_match']:.1f}"
                                                     for length, cell in items[start:start + per_line])
            for start in range(0, len(items), per_line)]


def length_bands(by_length, band):
    """{"11-20": exact match over all problems of those lengths, ...}: bands of `band` lengths, aligned to
    multiples of it (1-10, 11-20...)."""
    totals = {}
    for length, cell in by_length.items():
        first = (int(length) - 1) // band * band + 1
        correct, count = totals.get(first, (0, 0))
        totals[first] = (correct + cell["exact_match"] * cell["count"], count + cell["count"])
    return {f"{first}-{first + band - 1}": correct / count for first, (correct, count) in sorted(totals.items())}


def sign_report(exact_match, sign):
    """' | sign right 0.9859 (141 of 146 mistakes)': how many of an operation's mistakes are a wrong sign."""
    if sign is None:
        return ""
    mistakes = round(exact_match["count"] * (1 - exact_match["exact_match"]))
    wrong_signs = round(sign["count"] * (1 - sign["accuracy"]))
    return f" | sign right {sign['accuracy']:.4f} ({wrong_signs} of {mistakes} mistakes)"


def log_report(results, log, split):
    """The numbers a reader looks at first: operand-digit cells (up to 25), per operation, carries, answer digits by
    place, the running-sum probe, scratchpad steps, edge cases, worst cells and mistakes (the totals are logged by
    the caller)."""
    by_digits = results["exact_match_by_operand_digits"]
    if len(by_digits) <= 25:  # larger grids are for the JSON and the heatmap
        for digits, cell in by_digits.items():
            log.info(f"{split} operand digits {digits}: exact match {cell['exact_match']:.4f} ({cell['count']} "
                     f"problems)")
    for operator, values in results["exact_match_by_operation"].items():
        carries = results["exact_match_by_carries"].get(operator, {})
        by_carries = " | by carries " + " ".join(f"{n}:{c['exact_match']:.3f}" for n, c in carries.items()) \
            if carries else ""
        log.info(f"{split} {operator}: exact match {values['exact_match']:.4f} ({values['count']} problems)"
                 f"{sign_report(values, results['sign_accuracy_by_operation'].get(operator))}{by_carries}")
    for operator, places in results["digit_accuracy_by_place"].items():
        log.info(f"{split} {operator}: answer digits right by place (units first) " +
                 " ".join(f"{place}:{c['accuracy']:.3f}" for place, c in places.items()))
    for place, reading in results.get("running_sum_probe", {}).items():
        log.info(f"{split} running-sum probe, answer digit place {place}: rmse {reading['rmse']:.2f} | reads the "
                 f"column total to the unit {reading['read_right']:.3f} ({reading['count']} digits)")
    if "scratchpad" in results:
        log.info(f"{split} scratchpad: all steps right {results['scratchpad']['steps_exact_match']:.4f} | "
                 f"step accuracy {results['scratchpad']['step_accuracy']:.4f}")
    if "edge_cases" in results:
        edge = results["edge_cases"]
        log.info(f"{split} edge cases: exact match {edge['exact_match']:.4f} ({edge['count']} problems) | " +
                 " | ".join(f"{kind} {c['exact_match']:.3f}" for kind, c in edge["by_kind"].items()))
    by_length = results["exact_match_by_length"]
    if len(by_length) > 1:
        for line in length_table(by_length):
            log.info(f"{split} {line}")
    for worst in results["worst_cells"]:
        log.info(f"{split} weak cell {worst['operation']} {worst['operand_digits']} digits: exact match "
                 f"{worst['exact_match']:.4f} ({worst['count']} problems)")
    for mistake in results["mistakes"]:
        log.info(f"{split} wrong: {mistake_text(mistake)}")
    for mistake in results.get("edge_cases", {}).get("mistakes", []):
        log.info(f"{split} edge case wrong ({mistake['kind']}): {mistake_text(mistake)}")


def mistake_text(mistake):
    """'12+34=47  (expected 46)'."""
    return f"{mistake['prompt']}{mistake['predicted']}  (expected {mistake['expected']})"
