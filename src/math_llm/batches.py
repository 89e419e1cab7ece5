"""Which examples each optimizer step trains on: the shuffled order of an epoch, a pure function of (seed, epoch),
cut into steps, ranks and micro-steps. So a step number (an example count) says exactly which batches a run has
seen, and a resumed run neither replays nor skips any.
"""

import math

import torch

from math_llm.distributed import Ranks

LENGTH_GROUP_BATCHES = 64  # --group-by-length sorts runs of this many batches


def epoch_order(num_examples, seed, epoch, lengths=None, batch_size=None):
    """The shuffled example order of one epoch, a pure function of (seed, epoch). Given `lengths`, each run of
    LENGTH_GROUP_BATCHES x batch_size examples of it is sorted longest first, so that a batch holds examples of
    similar length and pads little (a step is cut from consecutive examples; see step_batches)."""
    order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    if lengths is None:
        return order
    runs = order.split(LENGTH_GROUP_BATCHES * batch_size)
    return torch.cat([run[lengths[run].argsort(descending=True, stable=True)] for run in runs])


def step_batches(dataset, order, batch_size, ranks=Ranks(), accumulation_steps=1, first_example=0):
    """The optimizer steps of one epoch, from example `first_example` of its order on: for each step, this rank's
    micro-batches [(inputs, targets, extra targets, weight)] and the number of examples the whole step covers.

    A step takes the next batch_size x world_size x accumulation_steps examples of the order (every rank computes
    the same order) and cuts them into that many equal parts: part k x world_size + rank is this rank's micro-step
    k, so the ranks together see each example once per epoch. An epoch's last, shorter step is cut as evenly as it
    goes. `weight` is the part's share of the step's answer tokens times the world size: a micro-batch's mean loss
    times its weight, summed and averaged by DDP, is the mean over all answer tokens of the global batch, whatever
    the masks. A rank left with no example takes one with weight 0, so that it still joins the all-reduce.

    A batch is an index into tensors already on the training device, so it costs microseconds in this process
    (worker processes would only add copies between processes); the order goes to the device once per epoch."""
    parts = ranks.world_size * accumulation_steps
    device_order = order.to(dataset.tokens.device)
    answer_tokens = dataset.lengths - dataset.prompt_lengths
    for start in range(first_example, len(order), batch_size * parts):
        positions = torch.arange(start, min(start + batch_size * parts, len(order)))
        step_answer_tokens = float(answer_tokens[order[positions]].sum())
        micro_batches = []
        for micro_step in range(accumulation_steps):
            part = torch.tensor_split(positions, parts)[micro_step * ranks.world_size + ranks.rank]
            weight = ranks.world_size * float(answer_tokens[order[part]].sum()) / step_answer_tokens
            if len(part) == 0:
                part, weight = positions[:1], 0.0
            micro_batches.append((*dataset.batch(order[part], device_order[part]), weight))
        yield micro_batches, len(positions)


def steps_remaining(examples_seen, num_examples, num_epochs, examples_per_step):
    """Optimizer steps left in a run that has consumed `examples_seen` examples (all epochs together)."""
    epoch, position = divmod(examples_seen, num_examples)
    if epoch >= num_epochs:
        return 0
    return (math.ceil((num_examples - position) / examples_per_step)
            + (num_epochs - epoch - 1) * math.ceil(num_examples / examples_per_step))
