"""Export a trained 10-digit adder to AdderBoard (github.com/anadim/AdderBoard): one self-contained Python file with
the weights, the model code, generic greedy decoding and the data format's conversion, which the board's verify.py
loads (build_model() -> (model, metadata), add(model, a, b) -> int). The export is then scored as verify.py scores
it, on its seed 2025 and any other seeds, and the scores are written beside the file as JSON.

    python scripts/export_adderboard.py checkpoints/adder_shapes/l2_w8/seed-1 [--output adder.py] [--seeds 2025,1,2]
    python verify.py adder.py          # in a clone of the AdderBoard repository: the board's own check
"""

import argparse
import logging
import os

from math_llm.adderboard import PROTOCOL_SEED, PROTOCOL_TESTS, check_submission, write_submission
from math_llm.checkpoint import load_model
from math_llm.cli import run_main
from math_llm.files import write_json
from math_llm.logging_setup import setup_logging
from math_llm.recipes import parse_seeds, shown_path
from math_llm.run_lock import writable_dir

log = logging.getLogger("math_llm.export_adderboard")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run's output dir (its best_model.pt), or a checkpoint or weights file")
    parser.add_argument("--output", help="the submission file (default: <run>/adderboard_submission.py)")
    parser.add_argument("--name", help="the entry's name (default: 'Math LLM' and the run's directory)")
    parser.add_argument("--author", default="Math LLM", help="the entry's author (default: %(default)s)")
    parser.add_argument("--seeds", default=str(PROTOCOL_SEED), help="comma-separated seeds of the protocol to score "
                        "the export on, as verify.py --seed does; 'none' to skip (default: %(default)s)")
    parser.add_argument("--num-tests", type=int, default=PROTOCOL_TESTS, help="random pairs per seed, besides the "
                        "10 edge cases (default: %(default)s, the board's)")
    return parser


def main():
    args = build_parser().parse_args()
    setup_logging()
    seeds = None if args.seeds == "none" else parse_seeds(args.seeds)  # a typo fails before any work
    trained = load_model(args.run, "cpu")
    run_dir = args.run if os.path.isdir(args.run) else os.path.dirname(os.path.abspath(args.run))
    output = args.output or os.path.join(run_dir, "adderboard_submission.py")
    name = args.name or f"Math LLM {shown_path(run_dir)}"
    writable_dir(os.path.dirname(os.path.abspath(output)), "--output")
    metadata = write_submission(trained, output, name, args.author)
    log.info(f"wrote {output}: {metadata['params']:,} unique parameters; {metadata['architecture']}")
    if seeds is None:
        return
    results = check_submission(output, seeds, args.num_tests, log.info)
    scores_file = os.path.splitext(output)[0] + "_scores.json"
    write_json(scores_file, {"submission": output, "metadata": metadata, "num_tests": args.num_tests,
                             "seeds": results})
    log.info(f"scores in {scores_file}")


if __name__ == "__main__":
    run_main(main)
