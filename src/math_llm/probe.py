"""The running-sum probe (train.py --running-sum-loss): a linear readout of each answer digit's column total from
the model's last hidden state, trained as an auxiliary loss. Bai et al. (2025) found that a model that multiplies
without a scratchpad holds these running sums, and that this loss lets standard training find them. The probe is the
training code's: the model only exposes its hidden states.
"""

from collections import Counter

import torch
import torch.nn as nn

from math_llm.distributed import all_gather_objects, rank_shard
from math_llm.errors import ConfigError
from math_llm.model import IGNORE_INDEX
from math_llm.problems import parse_prompt
from math_llm.runtime import autocast

TARGET_NAME = "running_sums"  # the dataset's extra per-token target, and the keyword the probed model takes


class RunningSumProbe(nn.Module):
    """nn.Linear(hidden, 1) reading the running sum in tens (a carry is 1, near the scale of the logits)."""

    def __init__(self, hidden_size):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # from zeros, and the rest of the run draws as it would without it
            self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden):
        """The reading at each position of `hidden`, in tens. In fp32 under autocast too: bf16 would round a total
        of 160 to steps of 1.25."""
        with torch.autocast(hidden.device.type, enabled=False):
            return self.linear(hidden.float()).squeeze(-1)

    def squared_error(self, hidden, running_sums, targets):
        """The squared error of the readings against the running sums (in units, NaN where there is none), summed
        over the positions that have one and divided by the answer tokens: so it is weighed across micro-batches and
        ranks as the cross-entropy is, whatever the mix of operations. Masked rather than indexed, so that the probe
        is in every step's graph (DDP needs each parameter to get a gradient) and no host sync is needed."""
        has_sum = running_sums.isfinite()
        error = self(hidden) - running_sums.nan_to_num() / 10
        return (error.square() * has_sum).sum() / (targets != IGNORE_INDEX).sum().clamp(min=1)


class ProbedModel(nn.Module):
    """What training steps with the probe on: the model's loss plus `weight` x the probe's squared error, from one
    pass over the hidden states. Its parameters are the model's, then the probe's."""

    def __init__(self, model, probe, weight):
        super().__init__()
        self.model, self.probe, self.weight = model, probe, weight

    def forward(self, idx, targets, running_sums):
        hidden = self.model.hidden_states(idx)
        logits, loss = self.model.head(hidden, targets)
        return logits, loss + self.weight * self.probe.squared_error(hidden, running_sums, targets)


def add_running_sums(dataset):
    """Gives `dataset` the probe's targets: at each answer digit of a problem whose operation defines running sums
    (two-operand multiplication), the column total whose last digit it is; NaN at every other position. Returns how
    many problems have them (none: the dataset gets no targets)."""
    if dataset.format.scratchpad:
        raise ConfigError(f"{dataset.source}: the running-sum loss reads answers written without a scratchpad, "
                          f"and this data has the {dataset.format.name!r} format")
    running_sums = torch.full(dataset.tokens.shape, torch.nan)
    count = 0
    for row, (prompt, answer) in enumerate(zip(dataset.prompts, dataset.answers)):
        problem = parse_prompt(prompt, dataset.format)  # not dataset.problems: a training split may be millions
        totals = problem.operation.running_sums and problem.operation.running_sums(problem.operands, len(answer))
        if totals is None:
            continue
        start = int(dataset.prompt_lengths[row])  # a digit is one token
        places = dataset.format.written_places(len(answer))
        running_sums[row, start:start + len(answer)] = torch.tensor([totals[place] for place in places],
                                                                     dtype=torch.float)
        count += 1
    if count:
        dataset.add_token_targets(TARGET_NAME, running_sums)
    return count


@torch.no_grad()
def running_sum_readout(model, probe, dataset, batch_size, device, precision):
    """How well the probe reads each answer digit's column total, by place of the digit (units first): {place:
    {"rmse": in units, "read_right": share of readings that round to the total, "count"}}, for a dataset after
    add_running_sums. Under torchrun each rank reads every world_size-th problem and the sums are gathered."""
    shard = rank_shard(dataset)
    squared_error, read_right, count = Counter(), Counter(), Counter()
    was_training = model.training
    model.eval()
    for start in range(0, len(shard), batch_size):
        inputs, _, extra = shard.batch(torch.arange(start, min(start + batch_size, len(shard))))
        with autocast(device, precision):
            hidden = model.hidden_states(inputs.to(device))
        readings, running_sums = (10 * probe(hidden)).cpu(), extra[TARGET_NAME].cpu()
        has_sum = running_sums.isfinite()  # the sums sit at the answer digits, in the order they are written
        pairs = zip(readings[has_sum].tolist(), running_sums[has_sum].tolist())  # row by row, in one host copy
        for num_digits in has_sum.sum(dim=1).tolist():
            for place, (read, total) in zip(shard.format.written_places(num_digits), pairs):
                squared_error[place] += (read - total) ** 2
                read_right[place] += round(read) == total
                count[place] += 1
    model.train(was_training)
    gathered = all_gather_objects((squared_error, read_right, count))
    squared_error, read_right, count = (sum((part[i] for part in gathered), Counter()) for i in range(3))
    return {str(place): {"rmse": (squared_error[place] / count[place]) ** 0.5,
                         "read_right": read_right[place] / count[place], "count": count[place]}
            for place in sorted(count)}


def pooled_rmse(readout):
    """The RMSE of a running_sum_readout over all its places together."""
    count = sum(reading["count"] for reading in readout.values())
    return (sum(reading["rmse"] ** 2 * reading["count"] for reading in readout.values()) / count) ** 0.5
