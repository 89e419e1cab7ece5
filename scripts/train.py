"""Train a Math LLM model, or resume the run already in --output-dir.

    python scripts/train.py [--model-size small] [--output-dir checkpoints] ...
    torchrun --nproc_per_node 8 scripts/train.py ...     # data-parallel, same flags
"""

import argparse
import logging
import os
import sys

from math_llm.cli import run_main
from math_llm.distributed import run_process
from math_llm.flags import add_flags, parse_config
from math_llm.logging_setup import setup_logging
from math_llm.trainer import TrainConfig, train


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_flags(parser, TrainConfig)


def main():
    config, _, explicit_flags = parse_config(build_parser(), TrainConfig, sys.argv[1:])
    if int(os.environ.get("RANK", "0")) == 0:
        setup_logging(os.path.join(config.output_dir, "logs", "training.log"))
    else:  # under torchrun, the other ranks only warn; rank 0 writes the log
        setup_logging(level=logging.WARNING)
    run_process(train, config, explicit_flags)


if __name__ == "__main__":
    run_main(main)
