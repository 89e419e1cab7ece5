"""Type a problem such as `12+34=` (or the start of one, `7+`) and see the model's greedy completion.

    python scripts/interactive.py --checkpoint checkpoints/best_model.pt
"""

import argparse

from math_llm.checkpoint import load_model
from math_llm.cli import run_main
from math_llm.decoding import complete
from math_llm.logging_setup import setup_logging
from math_llm.runtime import DEVICES, select_device


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="checkpoints/best_model.pt",
                        help="best_model.pt, a checkpoint-N.pt, or an output dir (default: %(default)s)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto picks CUDA when present (default: %(default)s)")
    return parser


def main():
    args = build_parser().parse_args()
    setup_logging()
    device = select_device(args.device)
    trained = load_model(args.checkpoint, device)
    data = trained.data_config
    trained_on = (f" with operations {data['operations']} up to {data['max_digits']} digits"
                  if {"operations", "max_digits"} <= data.keys() else "")
    print(f"Loaded {trained.source}, trained{trained_on} on the {trained.data_format.name!r} format: "
          f"{trained.data_format.example}. Type a problem in that format (empty line or Ctrl-D to quit).")
    while True:
        try:
            prompt = input("> ").strip().replace(" ", "")
        except (EOFError, KeyboardInterrupt):
            print()
            break
        if not prompt:
            break
        try:
            completion = complete(trained, prompt, device)
        except ValueError as error:  # TokenizerError is one
            print(f"invalid input: {error}")
            continue
        if "=" in prompt:
            print(f"{prompt}{completion}")
        else:  # the loss covered only answers, so what the model writes before "=" is its guess, not training
            print(f"{prompt}{completion or '<end>'}   (a partial prompt: the model learned to write answers after "
                  f"'=', so this continuation is untrained)")


if __name__ == "__main__":
    run_main(main)
