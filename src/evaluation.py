"""Metrics over a whole split: loss and token accuracy (teacher-forced), and exact match (greedy generation)."""

from collections import Counter, defaultdict

import torch
import torch.distributed as dist
import torch.nn.functional as F

from src.data import IGNORE_INDEX, operand_digits
from src.distributed import all_gather_objects
from src.generation import greedy_generate
from src.runtime import autocast


@torch.no_grad()
def teacher_forced_counts(model, dataset, batch_size, device, precision):
    """(summed loss, correct tokens, answer tokens): sums, so that shards of a split add up to the whole."""
    loss_sum, correct, total = 0.0, 0, 0
    for start in range(0, len(dataset), batch_size):
        inputs, targets = dataset.batch(torch.arange(start, min(start + batch_size, len(dataset))))
        inputs, targets = inputs.to(device), targets.to(device)
        with autocast(device, precision):
            logits, _ = model(inputs)
        mask = targets != IGNORE_INDEX
        loss_sum += F.cross_entropy(logits.float()[mask], targets[mask], reduction="sum").item()
        correct += (logits.argmax(dim=-1)[mask] == targets[mask]).sum().item()
        total += mask.sum().item()
    return loss_sum, correct, total


@torch.no_grad()
def generate_answers(model, dataset, tokenizer, batch_size, device, precision):
    """Greedy answers for every problem; prompts are grouped by length so a batch needs no padding."""
    answers = [None] * len(dataset)
    by_prompt_length = defaultdict(list)
    for index, length in enumerate(dataset.prompt_lengths.tolist()):
        by_prompt_length[length].append(index)
    for prompt_length, indices in by_prompt_length.items():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            prompts = dataset.tokens[chunk, :prompt_length].to(device)
            with autocast(device, precision):
                generated = greedy_generate(model, prompts, model.config.max_length - prompt_length, tokenizer.end_id)
            for index, ids in zip(chunk, generated):
                answers[index] = tokenizer.decode(ids)
    return answers


def evaluate(model, dataset, tokenizer, batch_size, device, precision, num_mistakes=5):
    """Metrics over the whole split. Under torchrun each rank evaluates every world_size-th problem and the counts
    of all ranks are summed, so every rank returns the metrics of the whole split."""
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    shard = dataset.subset(range(rank, len(dataset), world_size)) if world_size > 1 else dataset
    was_training = model.training
    model.eval()
    loss_sum, correct_tokens, answer_tokens = teacher_forced_counts(model, shard, batch_size, device, precision)
    predictions = generate_answers(model, shard, tokenizer, batch_size, device, precision)
    model.train(was_training)

    correct_by_digits, count_by_digits = Counter(), Counter()
    mistakes = []
    for prompt, answer, predicted in zip(shard.prompts, shard.answers, predictions):
        key = "x".join(map(str, operand_digits(prompt)))
        count_by_digits[key] += 1
        if predicted == answer:
            correct_by_digits[key] += 1
        elif len(mistakes) < num_mistakes:
            mistakes.append({"prompt": prompt, "expected": answer, "predicted": predicted})

    counts = all_gather_objects((loss_sum, correct_tokens, answer_tokens, correct_by_digits, count_by_digits,
                                 mistakes))
    loss_sum, correct_tokens, answer_tokens = (sum(shard_counts[i] for shard_counts in counts) for i in range(3))
    correct_by_digits = sum((shard_counts[3] for shard_counts in counts), Counter())
    count_by_digits = sum((shard_counts[4] for shard_counts in counts), Counter())
    mistakes = [mistake for shard_counts in counts for mistake in shard_counts[5]][:num_mistakes]
    return {
        "num_examples": len(dataset),
        "loss": loss_sum / answer_tokens,
        "token_accuracy": correct_tokens / answer_tokens,
        "exact_match": sum(correct_by_digits.values()) / len(dataset),
        "exact_match_by_operand_digits": {
            key: {"exact_match": correct_by_digits[key] / count, "count": count}
            for key, count in sorted(count_by_digits.items())
        },
        "mistakes": mistakes,
    }
