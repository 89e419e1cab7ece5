"""Type a problem such as `12+34=` (or the start of one, `7+`) and see the model's greedy completion.

    python scripts/interactive.py --checkpoint checkpoints/best_model.pt
"""

import argparse
import logging

from src.checkpoint import load_model
from src.cli import run_main
from src.problems import FORMATS
from src.generation import complete
from src.logging_setup import setup_logging
from src.runtime import select_device
from src.tokenizer import TokenizerError

log = logging.getLogger("interactive")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="checkpoints/best_model.pt",
                        help="best_model.pt, a checkpoint-N.pt, or an output dir (default: %(default)s)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto picks CUDA when present (default: %(default)s)")
    return parser


def main():
    args = build_parser().parse_args()
    setup_logging()
    device = select_device(args.device)
    model, tokenizer, checkpoint, model_path = load_model(args.checkpoint, device, log)
    data_format = checkpoint.get("data_format", "plain")
    data = checkpoint.get("data_config")  # best_model.pt files from before operations lack it
    trained_on = f" with operations {data['operations']} up to {data['max_digits']} digits" if data else ""
    print(f"Loaded {model_path}, trained{trained_on} on the {data_format!r} format: {FORMATS[data_format]}. Type a "
          f"problem in that format (empty line or Ctrl-D to quit).")
    while True:
        try:
            prompt = input("> ").strip().replace(" ", "")
        except (EOFError, KeyboardInterrupt):
            print()
            break
        if not prompt:
            break
        try:
            completion = complete(model, tokenizer, prompt, device)
        except (TokenizerError, ValueError) as error:
            print(f"invalid input: {error}")
            continue
        if "=" in prompt:
            print(f"{prompt}{completion}")
        else:  # the loss covered only answers, so what the model writes before "=" is its guess, not training
            print(f"{prompt}{completion or '<end>'}   (a partial prompt: the model learned to write answers after "
                  f"'=', so this continuation is untrained)")


if __name__ == "__main__":
    run_main(main)
