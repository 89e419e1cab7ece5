"""Metrics over a whole split: loss and token accuracy (teacher-forced), and exact match (greedy generation)."""

from collections import defaultdict

import torch
import torch.nn.functional as F

from src.data import IGNORE_INDEX, operand_digits
from src.generation import greedy_generate
from src.runtime import autocast


@torch.no_grad()
def teacher_forced_metrics(model, dataset, batch_size, device, precision):
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
    return loss_sum / total, correct / total


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
    was_training = model.training
    model.eval()
    loss, token_accuracy = teacher_forced_metrics(model, dataset, batch_size, device, precision)
    predictions = generate_answers(model, dataset, tokenizer, batch_size, device, precision)
    model.train(was_training)

    correct_by_digits, count_by_digits = defaultdict(int), defaultdict(int)
    mistakes = []
    for prompt, answer, predicted in zip(dataset.prompts, dataset.answers, predictions):
        key = "x".join(map(str, operand_digits(prompt)))
        count_by_digits[key] += 1
        if predicted == answer:
            correct_by_digits[key] += 1
        elif len(mistakes) < num_mistakes:
            mistakes.append({"prompt": prompt, "expected": answer, "predicted": predicted})
    num_correct = sum(correct_by_digits.values())
    return {
        "num_examples": len(dataset),
        "loss": loss,
        "token_accuracy": token_accuracy,
        "exact_match": num_correct / len(dataset),
        "exact_match_by_operand_digits": {
            key: {"exact_match": correct_by_digits[key] / count, "count": count}
            for key, count in sorted(count_by_digits.items())
        },
        "mistakes": mistakes,
    }
