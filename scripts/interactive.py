"""Type a problem as a person writes it, `12+34` or `12 + 34 =`, and see the model's answer in normal digit order,
right or wrong (with the expected answer): `12+34 = 46  right`. It is fed in the model's own format (reversed,
zero-padded) and its answer read back (scratchpad, reversal and padding undone; sign and remainder `3r2` kept).
A warning names what lies outside the training data (operation, operand count or length) and it answers anyway;
what it cannot read (operands wider than its padding, a prompt past max_length) and the start of a problem (`7+`:
the model learned to write answers, not operands) get one line. `--raw`, or `:raw` to toggle, also shows the
prompt and raw completion (`12+34= -> 640<end>`). quit, exit, an empty line, Ctrl-D or Ctrl-C end the session.

    python scripts/interactive.py --checkpoint checkpoints/best_model.pt
"""

import argparse
import atexit
import contextlib
import os
import sys

from math_llm.checkpoint import load_model
from math_llm.cli import run_main
from math_llm.decoding import complete
from math_llm.logging_setup import setup_logging
from math_llm.problems import read_answer, read_written_problem, written_answer
from math_llm.runtime import DEVICES, select_device
from math_llm.tokenizer import END_TOKEN

QUIT_WORDS = {"", "quit", "exit"}
RAW_COMMAND = ":raw"
HISTORY_FILE = os.path.expanduser("~/.math_llm_history")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="checkpoints/best_model.pt",
                        help="best_model.pt, a checkpoint-N.pt, or an output dir (default: %(default)s)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto picks CUDA when present (default: %(default)s)")
    parser.add_argument("--raw", action="store_true",
                        help=f"also show the model's prompt and raw completion ({RAW_COMMAND} toggles it)")
    return parser


def training_summary(trained):
    """'+ -, 2 operands of 1 to 2 digits, in the 'padded-reversed' format': as much as its data config says."""
    parts = [" ".join(trained.trained_operators)] if trained.trained_operators else []
    most = trained.data_config.get("max_operands")
    operands = "operands" if most is None else "2 operands" if most == 2 else f"2 to {most} operands"
    if trained.trained_lengths:
        parts.append(f"{operands} of {trained.trained_lengths[0]} to {trained.trained_lengths[1]} digits")
    return ", ".join(parts + [f"in the {trained.data_format.name!r} format"])


def verdict(problem, completion, ended, data_format):
    """'12+34 = 46  right', or wrong with the expected answer and, where the model wrote no number, why."""
    expected = written_answer(problem.answer_numbers)
    numbers = read_answer(completion, data_format) if ended else None
    if numbers == problem.answer_numbers:
        return f"{problem.written} = {expected}  right"
    if numbers is not None:
        return f"{problem.written} = {written_answer(numbers)}  wrong, expected {expected}"
    why = (f"the model wrote {completion!r}, not a number" if ended
           else f"the answer ran out of length before {END_TOKEN}")
    return f"{problem.written} = ?  wrong, expected {expected}: {why}"


def reply(trained, text, device, show_raw=False):
    """The lines answering one typed problem: a warning if it lies outside the training data, then the model's
    answer and whether it is right (with its raw text if `show_raw`), or a one-line reason it cannot be read."""
    try:
        problem = read_written_problem(text)
        prompt = trained.prompt_for(problem)
    except ValueError as error:
        return [f"cannot read it: {error}"]
    outside = trained.outside_training(problem)
    lines = [f"warning: outside the training data: {'; '.join(outside)}"] if outside else []
    try:
        completion, ended = complete(trained, prompt, device)
    except ValueError as error:  # TokenizerError is one
        return lines + [f"the model cannot read it: {error}"]
    lines.append(verdict(problem, completion, ended, trained.data_format))
    if show_raw:
        lines.append(f"  {prompt} -> {completion}{END_TOKEN if ended else ''}")
    return lines


def enable_line_editing():
    """Arrow keys and a history kept across sessions in HISTORY_FILE, on a terminal where readline exists (piped
    input needs neither)."""
    if not sys.stdin.isatty():
        return
    try:
        import readline
    except ImportError:  # Windows
        return
    with contextlib.suppress(OSError):
        readline.read_history_file(HISTORY_FILE)
    atexit.register(save_history, readline)


def save_history(readline):
    with contextlib.suppress(OSError):
        readline.set_history_length(1000)
        readline.write_history_file(HISTORY_FILE)


def read_line():
    """The next typed line, stripped; None at the end of the session (a quit word, Ctrl-D or Ctrl-C)."""
    try:
        line = input("> ").strip()
    except (EOFError, KeyboardInterrupt):
        print()
        return None
    return None if line.lower() in QUIT_WORDS else line


def main():
    args = build_parser().parse_args()
    setup_logging()
    device = select_device(args.device)
    trained = load_model(args.checkpoint, device)
    enable_line_editing()
    print(f"Loaded {trained.source}, trained on {training_summary(trained)}. Type a problem such as 12+34; "
          f"{RAW_COMMAND} shows the model's own text; quit, an empty line or Ctrl-D ends.")
    show_raw = args.raw
    while (line := read_line()) is not None:
        if line == RAW_COMMAND:
            show_raw = not show_raw
            print(f"raw text {'on' if show_raw else 'off'}")
            continue
        print("\n".join(reply(trained, line, device, show_raw)))


if __name__ == "__main__":
    run_main(main)
