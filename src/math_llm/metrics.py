"""Metrics over a whole split: loss and token accuracy (teacher-forced), and exact match (greedy decoding) in total
and by operation, operand lengths, carries and number of operands, with the worst cells and some mistakes; how
often each answer digit is right, by place; the sign of answers that have one; scratchpad steps. Counts first, so
that the shards of a split under torchrun add up to the whole."""

from collections import Counter

import torch
import torch.nn.functional as F

from math_llm.decoding import dataset_answers
from math_llm.distributed import all_gather_objects, rank_shard
from math_llm.model import IGNORE_INDEX, batch_rows
from math_llm.problems import answer_places, cell_sort_key, final_answer, written_steps
from math_llm.runtime import autocast


@torch.no_grad()
def teacher_forced_counts(model, dataset, batch_size, device, precision):
    """(summed loss, correct tokens, answer tokens): sums, so that shards of a split add up to the whole. Batches
    of long problems hold fewer of them (batch_rows caps the attention scores one batch holds)."""
    loss_sum, correct, total = 0.0, 0, 0
    by_length = dataset.lengths.argsort()  # batches of similar length pad little
    start = 0
    while start < len(dataset):
        longest = int(dataset.lengths[by_length[start:start + batch_size]].max())
        indices = by_length[start:start + batch_rows(model.config, batch_size, longest)]
        start += len(indices)
        inputs, targets, _ = dataset.batch(indices)
        inputs, targets = inputs.to(device), targets.to(device)
        with autocast(device, precision):
            logits, _ = model(inputs)
        mask = targets != IGNORE_INDEX
        loss_sum += F.cross_entropy(logits.float()[mask], targets[mask], reduction="sum").item()
        correct += (logits.argmax(dim=-1)[mask] == targets[mask]).sum().item()
        total += mask.sum().item()
    return loss_sum, correct, total


def cell(correct, count, metric="exact_match"):
    return {metric: correct / count, "count": count}


def tally(dataset, predictions, num_mistakes):
    """Counts of right final answers by operation, operand lengths and carries, of right answer digits by
    operation and place (key ("place", operator, place)) and of right signs (("sign", operator), for operations
    whose answers may be negative); scratchpad step counts; mistakes. Counters and sums only, so that the tallies of
    shards add up to the whole split's."""
    correct, count = Counter(), Counter()
    steps = Counter()
    mistakes = []
    for prompt, problem, answer, predicted in zip(dataset.prompts, dataset.problems, dataset.answers, predictions):
        predicted_answer, expected_answer = final_answer(predicted), final_answer(answer)
        right = predicted_answer == expected_answer
        operator, digits, operation = problem.operator, problem.digits_key, problem.operation
        keys = [("all",), ("operation", operator), ("digits", digits), ("grid", operator, digits),
                ("operands", len(problem.operands)), ("length", max(problem.operand_digits))]
        carries = operation.carries.count(problem.operands) if operation.carries else None
        if carries is not None:
            keys.append(("carries", operator, carries))
        for key in keys:
            count[key] += 1
            correct[key] += right
        # Which digits go wrong: a model that multiplies may get the ends right and the middle places at chance.
        predicted_places = answer_places(predicted, dataset.format)
        for place, digit in enumerate(answer_places(answer, dataset.format)):
            count[("place", operator, place)] += 1
            correct[("place", operator, place)] += predicted_places[place:place + 1] == digit  # "" if too short
        if operation.negative_results:  # without a scratchpad most mistakes of - are a wrong sign
            count[("sign", operator)] += 1  # no answer (empty, or a scratchpad cut off) has no sign to be right
            correct[("sign", operator)] += bool(predicted_answer) and (predicted_answer.startswith("-")
                                                                       == expected_answer.startswith("-"))
        expected_steps = written_steps(answer)
        if expected_steps:
            predicted_steps = written_steps(predicted)
            steps["problems"] += 1
            steps["all_right"] += predicted_steps == expected_steps
            steps["right"] += sum(e == p for e, p in zip(expected_steps, predicted_steps))
            steps["total"] += len(expected_steps)
        if not right and len(mistakes) < num_mistakes:
            mistakes.append({"prompt": prompt, "expected": answer, "predicted": predicted})
    return correct, count, steps, mistakes


def breakdown(correct, count, kind, metric="exact_match"):
    """{key: cell} for the counters' keys of this kind, e.g. kind "operation" -> {"+": {...}, "-": {...}}."""
    cells = {}
    for key in sorted((key for key in count if key[0] == kind), key=lambda key: [cell_sort_key(k) for k in key[1:]]):
        *outer, inner = key[1:]
        target = cells
        for part in outer:
            target = target.setdefault(part, {})
        target[str(inner)] = cell(correct[key], count[key], metric)
    return cells


def worst_cells(grid, limit=5):
    """The (operation, operand digits) cells with the lowest exact match, below 100%."""
    cells = [{"operation": operator, "operand_digits": digits, **values}
             for operator, by_digits in grid.items() for digits, values in by_digits.items()
             if values["exact_match"] < 1]
    return sorted(cells, key=lambda c: (c["exact_match"], -c["count"]))[:limit]


def split_metrics(model, dataset, tokenizer, batch_size, device, precision, num_mistakes=5):
    """Metrics over the whole split. Under torchrun each rank evaluates every world_size-th problem and the counts
    of all ranks are summed, so every rank returns the metrics of the whole split.

    Exact match compares final answers (after a scratchpad's </think>); scratchpad steps are scored apart."""
    shard = rank_shard(dataset)
    was_training = model.training
    model.eval()
    loss_sum, correct_tokens, answer_tokens = teacher_forced_counts(model, shard, batch_size, device, precision)
    predictions = dataset_answers(model, shard, tokenizer, batch_size, device, precision)
    model.train(was_training)
    gathered = all_gather_objects((loss_sum, correct_tokens, answer_tokens, *tally(shard, predictions, num_mistakes)))
    loss_sum, correct_tokens, answer_tokens = (sum(part[i] for part in gathered) for i in range(3))
    correct, count, steps = (sum((part[i] for part in gathered), Counter()) for i in range(3, 6))
    mistakes = [mistake for part in gathered for mistake in part[6]][:num_mistakes]
    grid = breakdown(correct, count, "grid")
    results = {
        "num_examples": len(dataset),
        "precision": precision.description,
        "loss": loss_sum / answer_tokens,
        "token_accuracy": correct_tokens / answer_tokens,
        "exact_match": correct[("all",)] / count[("all",)],
        "num_correct": correct[("all",)],
        "exact_match_by_operation": breakdown(correct, count, "operation"),
        "exact_match_by_operand_digits": breakdown(correct, count, "digits"),
        "exact_match_by_operation_and_operand_digits": grid,
        "exact_match_by_carries": breakdown(correct, count, "carries"),
        "exact_match_by_num_operands": breakdown(correct, count, "operands"),
        "exact_match_by_length": breakdown(correct, count, "length"),  # digits of the longest operand
        "digit_accuracy_by_place": breakdown(correct, count, "place", "accuracy"),  # place 0: units
        "sign_accuracy_by_operation": breakdown(correct, count, "sign", "accuracy"),  # signed operations only
        "worst_cells": worst_cells(grid),
        "mistakes": mistakes,
    }
    if steps["problems"]:
        results["scratchpad"] = {"steps_exact_match": steps["all_right"] / steps["problems"],
                                 "step_accuracy": steps["right"] / steps["total"]}
    return results


def edge_case_metrics(model, edge_sets, tokenizer, batch_size, device, precision, num_mistakes=5):
    """Exact match on the edge cases, by kind; `edge_sets` as edge_case_datasets() builds them for the data. Each
    mistake names its kind."""
    by_kind, mistakes = {}, []
    correct = count = 0
    for kind, cases in edge_sets.items():
        results = split_metrics(model, cases, tokenizer, batch_size, device, precision, num_mistakes)
        by_kind[kind] = {"exact_match": results["exact_match"], "count": len(cases)}
        correct += results["num_correct"]
        count += len(cases)
        mistakes += [{**mistake, "kind": kind} for mistake in results["mistakes"]]
    return {"exact_match": correct / max(count, 1), "count": count, "by_kind": by_kind,
            "mistakes": mistakes[:num_mistakes]}
