"""Evaluate a trained model: exact match (greedy generation), token accuracy and loss, by operation, by operand
lengths (JSON and a heatmap PNG), by carries, by answer digit place, by the sign of differences, and on edge cases;
prints the worst cells and some mistakes. For a model trained with --running-sum-loss, also how well its probe reads
the column totals.

    python scripts/evaluate.py --checkpoint checkpoints/best_model.pt [--split test | --data-path file.json]
"""

import argparse
import json
import logging
import os

from src.checkpoint import load_model
from src.cli import run_main
from src.data import ArithmeticDataset, split_path
from src.edge_cases import edge_case_datasets
from src.errors import ConfigError
from src.evaluation import evaluate, evaluate_edge_cases, log_report, running_sum_readout
from src.files import write_json
from src.logging_setup import setup_logging
from src.model import longest_digit_place
from src.plots import save_grid_heatmap, save_length_plot
from src.runtime import select_device, select_precision

log = logging.getLogger("evaluate")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="checkpoints/best_model.pt",
                        help="best_model.pt, a checkpoint-N.pt, or an output dir (its best_model.pt) "
                             "(default: %(default)s)")
    parser.add_argument("--data-dir", default="data", help="directory with the split files (default: %(default)s)")
    parser.add_argument("--split", choices=["train", "val", "test"], default="test",
                        help="which split of --data-dir to evaluate (default: %(default)s)")
    parser.add_argument("--data-path", help="evaluate this JSON file instead of a split")
    parser.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (default: %(default)s)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto picks CUDA when present (default: %(default)s)")
    parser.add_argument("--fp16", action="store_true",
                        help="evaluate under fp16 autocast on CUDA, bf16 autocast on CPU")
    parser.add_argument("--bf16", action="store_true", help="evaluate under bf16 autocast")
    parser.add_argument("--num-mistakes", type=int, default=10, help="wrong answers to print (default: %(default)s)")
    parser.add_argument("--no-edge-cases", action="store_true",
                        help="skip the edge cases (all-9 operands, carries through every digit, zeros)")
    parser.add_argument("--output-file",
                        help="where to write the results as JSON (default: eval_<split or file name>.json beside "
                             "the checkpoint); the heatmap goes beside it, as <name>_heatmap.png")
    return parser


def trained_lengths(checkpoint):
    """[fewest, most] digits of the operands the model was trained on (None for checkpoints that do not say)."""
    data_config = checkpoint.get("data_config") or {}
    if "max_digits" not in data_config:
        return None
    return [data_config.get("min_digits", 1), data_config["max_digits"]]


def main():
    args = build_parser().parse_args()
    setup_logging()
    if args.batch_size < 1 or args.num_mistakes < 0:
        raise ConfigError("--batch-size must be at least 1 and --num-mistakes not negative")
    device = select_device(args.device)
    model, tokenizer, checkpoint, model_path = load_model(args.checkpoint, device, log)
    data_path = args.data_path or split_path(args.data_dir, args.split)
    dataset = ArithmeticDataset.from_file(data_path, tokenizer, model.max_tokens)
    model_format = checkpoint.get("data_format", "plain")  # checkpoints from before formats existed are plain
    if dataset.format != model_format:
        raise ConfigError(f"{data_path}: its problems are in the {dataset.format!r} format, but {model_path} was "
                          f"trained on {model_format!r}; evaluate it on data generated with --format {model_format}")
    # best_model.pt files from before widths were recorded lack the key: nothing to check against then
    if "operand_width" in checkpoint and dataset.operand_width != checkpoint["operand_width"]:
        raise ConfigError(f"{data_path}: its operands are padded to {dataset.operand_width} digits, but {model_path} "
                          f"learned {checkpoint.get('operand_width')}; generate the data with --max-digits "
                          f"{checkpoint.get('operand_width')}")
    longest_place = longest_digit_place(dataset.tokens) if model.digit_place_limit else 0
    if model.digit_place_limit and longest_place >= model.digit_place_limit:
        raise ConfigError(f"{data_path}: its numbers reach digit place {longest_place}, and "
                          f"{model_path} has places up to {model.digit_place_limit - 1}; train with a larger "
                          f"--digit-positions to read numbers this long")
    log.info(f"evaluating {model_path} (step {checkpoint.get('step', '?')}, {model.num_parameters():,} parameters) "
             f"on {data_path} ({len(dataset)} problems, device {device})")

    precision = select_precision(device, args.fp16, args.bf16)
    results = evaluate(model, dataset, tokenizer, args.batch_size, device, precision,
                       num_mistakes=args.num_mistakes)
    if not args.no_edge_cases:
        edge_sets = edge_case_datasets(dataset, tokenizer, model.max_tokens, model.digit_place_limit)
        results["edge_cases"] = evaluate_edge_cases(model, edge_sets, tokenizer, args.batch_size, device, precision,
                                                    num_mistakes=args.num_mistakes)
    if model.config.running_sum_loss and dataset.add_running_sums():
        results["running_sum_probe"] = running_sum_readout(model, dataset, args.batch_size, device, precision)
    results.update(checkpoint=model_path, data_path=data_path, pos_encoding=model.config.pos_encoding,
                   trained_lengths=trained_lengths(checkpoint))

    log.info(f"exact match {results['exact_match']:.4f} | token accuracy {results['token_accuracy']:.4f} | "
             f"loss {results['loss']:.4f}")
    by_digits = results["exact_match_by_operand_digits"]
    if len(by_digits) <= 25:  # larger grids are for the JSON and the heatmap
        for digits, cell in by_digits.items():
            log.info(f"  operand digits {digits}: exact match {cell['exact_match']:.4f} ({cell['count']} problems)")
    name = os.path.splitext(os.path.basename(data_path))[0]
    log_report(results, log, name)

    output_file = args.output_file or os.path.join(os.path.dirname(model_path), f"eval_{name}.json")
    write_json(output_file, results)
    log.info(f"results written to {output_file}")
    heatmap = os.path.splitext(output_file)[0] + "_heatmap.png"
    if save_grid_heatmap(results["exact_match_by_operation_and_operand_digits"], heatmap,
                         f"{model_path} on {data_path}"):
        log.info(f"heatmap of exact match by operand lengths written to {heatmap}")
    if len(results["exact_match_by_length"]) > 1:
        length_plot = os.path.splitext(output_file)[0] + "_by_length.png"
        save_length_plot({model_path: results["exact_match_by_length"]}, length_plot,
                         f"{model.config.pos_encoding} positions on {name}", results["trained_lengths"])
        log.info(f"exact match versus length (training lengths shaded) written to {length_plot}")


if __name__ == "__main__":
    run_main(main)
