"""Train a Math LLM model, or resume the run already in --output-dir.

    python scripts/train.py [--model-size small] [--output-dir checkpoints] ...
    torchrun --nproc_per_node 8 scripts/train.py ...     # data-parallel, same flags
"""

import argparse
import logging
import os
import sys

from src.cli import run_main
from src.errors import PeerLost
from src.distributed import is_peer_failure
from src.distributed import teardown as teardown_distributed
from src.logging_setup import setup_logging
from src.model import MODEL_SIZES, POS_ENCODINGS
from src.trainer import TrainConfig, train

defaults = TrainConfig()


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--model-size", choices=list(MODEL_SIZES), default=defaults.model_size,
                       help="model shape, see README (default: %(default)s)")
    model.add_argument("--max-length", type=int, default=defaults.max_length,
                       help="longest example in tokens; longer ones are an error (default: %(default)s)")
    model.add_argument("--dropout", type=float, default=defaults.dropout, help="dropout rate (default: %(default)s)")
    model.add_argument("--pos-encoding", choices=list(POS_ENCODINGS), default=defaults.pos_encoding,
                       help="; ".join(f"{name}: {text}" for name, text in POS_ENCODINGS.items()) +
                            " (default: %(default)s)")
    model.add_argument("--digit-positions", type=int, default=defaults.digit_positions,
                       help="abacus: size of the digit-place table; training spreads the places of its numbers "
                            "over all of it, and evaluation reads additions of up to this - 3 digits (the answer "
                            "has a digit more, and the = takes place 1) (default: %(default)s)")
    model.add_argument("--no-place-bias", action="store_true",
                       help="abacus: no attention penalty for the distance between digit places (the digit-place "
                            "vectors alone, as the Abacus paper; generalises far less, see README)")
    model.add_argument("--running-sum-loss", type=float, default=defaults.running_sum_loss,
                       help="multiplication: a linear probe on the last hidden state (before the final LayerNorm) "
                            "learns to read, at each answer digit, its column total (the digit products of that "
                            "place plus the carry in, in tens), and this weight x its squared error per answer "
                            "token joins the training loss (and the logged train loss): a training-time signal "
                            "that helps a model without a scratchpad learn the long-range dependencies of "
                            "multiplication (Bai et al. 2025); 0: off (default: %(default)s)")

    hyper = parser.add_argument_group("training hyperparameters")
    hyper.add_argument("--batch-size", type=int, default=defaults.batch_size,
                       help="training batch size per process: under torchrun the global batch is this x the number "
                            "of processes x --gradient-accumulation-steps (default: %(default)s)")
    hyper.add_argument("--gradient-accumulation-steps", type=int, default=defaults.gradient_accumulation_steps,
                       help="micro-batches per optimizer step, e.g. to reproduce an N-process run on one device "
                            "(default: %(default)s)")
    hyper.add_argument("--group-by-length", action="store_true",
                       help="batch examples of similar length together (sorted within runs of 64 batches of the "
                            "shuffled order), so that mixed-length data wastes little compute on padding")
    hyper.add_argument("--eval-batch-size", type=int, default=defaults.eval_batch_size,
                       help="evaluation batch size (default: %(default)s)")
    hyper.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                       help="peak AdamW learning rate (default: %(default)s)")
    hyper.add_argument("--min-learning-rate-ratio", type=float, default=defaults.min_learning_rate_ratio,
                       help="the cosine decay ends at this fraction of the peak (default: %(default)s)")
    hyper.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                       help="AdamW weight decay on weight matrices and embeddings (default: %(default)s)")
    hyper.add_argument("--num-epochs", type=int, default=defaults.num_epochs,
                       help="passes over the training split (default: %(default)s)")
    hyper.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps,
                       help="linear warmup steps, capped at half the run (default: %(default)s)")
    hyper.add_argument("--max-grad-norm", type=float, default=defaults.max_grad_norm,
                       help="gradient clipping norm (default: %(default)s)")

    io = parser.add_argument_group("data and I/O")
    io.add_argument("--data-dir", default=defaults.data_dir,
                    help="directory with train/val/test.json; generated with the defaults if empty "
                         "(default: %(default)s)")
    io.add_argument("--output-dir", default=defaults.output_dir,
                    help="checkpoint and output directory; if it holds a run, that run is resumed "
                         "(default: %(default)s)")
    io.add_argument("--num-workers", type=int, default=defaults.num_workers,
                    help="accepted for the seed's interface, but no worker processes are started: a batch is an index "
                         "slice of tensors already on the training device, which costs microseconds in-process, "
                         "and workers would only add inter-process copies (see README, Speed) (default: %(default)s)")

    logging_group = parser.add_argument_group("logging and checkpointing")
    logging_group.add_argument("--save-steps", type=int, default=defaults.save_steps,
                               help="save a checkpoint every N steps (default: %(default)s)")
    logging_group.add_argument("--eval-steps", type=int, default=defaults.eval_steps,
                               help="evaluate on the val split every N steps (default: %(default)s)")
    logging_group.add_argument("--logging-steps", type=int, default=defaults.logging_steps,
                               help="log training metrics every N steps (default: %(default)s)")
    logging_group.add_argument("--keep-checkpoints", type=int, default=defaults.keep_checkpoints,
                               help="how many of the newest checkpoints to keep (default: %(default)s)")

    system = parser.add_argument_group("system")
    system.add_argument("--fp16", action="store_true",
                        help="mixed precision: fp16 autocast with GradScaler on CUDA; on CPU, bf16 autocast "
                             "(fp16 autocast is CUDA-only)")
    system.add_argument("--bf16", action="store_true",
                        help="bf16 autocast (no GradScaler needed) on CUDA or on a CPU with avx512_bf16/AMX; "
                             "fastest on such CPUs at batch 64 and up (see README, Speed)")
    system.add_argument("--compile", action="store_true",
                        help="torch.compile the model for training (evaluation and checkpoints use the uncompiled "
                             "model); costs compile time at start, see README, Speed for when it pays")
    system.add_argument("--no-wandb", action="store_true", help="disable Weights & Biases logging")
    system.add_argument("--wandb-project", default=defaults.wandb_project,
                        help="W&B project name (default: %(default)s)")
    system.add_argument("--device", choices=["auto", "cpu", "cuda"], default=defaults.device,
                        help="auto picks CUDA when present (default: %(default)s)")
    system.add_argument("--seed", type=int, default=defaults.seed,
                        help="random seed for init, batch order and default data (default: %(default)s)")
    return parser


def parse_args(argv):
    """The config, and the names of the flags given explicitly (a resumed run keeps its own values for the rest)."""
    parser = build_parser()
    config = TrainConfig(**vars(parser.parse_args(argv)))
    not_given = object()  # not a string, so argparse does not type-convert it
    parser.set_defaults(**{key: not_given for key in vars(config)})
    explicit_flags = frozenset(key for key, value in vars(parser.parse_args(argv)).items() if value is not not_given)
    return config, explicit_flags


def main():
    config, explicit_flags = parse_args(sys.argv[1:])
    if int(os.environ.get("RANK", "0")) == 0:
        setup_logging(os.path.join(config.output_dir, "logs", "training.log"))
    else:  # under torchrun, the other ranks only warn; rank 0 writes the log
        setup_logging(level=logging.WARNING)
    try:
        train(config, explicit_flags)
    except Exception as error:
        peer_lost = is_peer_failure(error)
        teardown_distributed(clean=False)
        if not peer_lost:
            raise
        first_line = (str(error).splitlines() or [type(error).__name__])[0][:160]
        raise PeerLost(f"rank {os.environ.get('RANK')}: another process of this job is gone "
                       f"({first_line}); stopping. Run the same torchrun command to resume "
                       f"from the last checkpoint, or give torchrun --max-restarts N to do that "
                       f"automatically") from None
    teardown_distributed()


if __name__ == "__main__":
    run_main(main)
