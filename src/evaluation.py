"""Metrics over a whole split: loss and token accuracy (teacher-forced), and exact match (greedy generation) in
total and by operation, operand lengths, carries and number of operands, with the worst cells and some mistakes;
how often each answer digit is right, by place; and how well a running-sum probe reads its column totals."""

from collections import Counter, defaultdict

import torch
import torch.distributed as dist
import torch.nn.functional as F

from src.data import IGNORE_INDEX
from src.distributed import all_gather_objects
from src.generation import greedy_generate
from src.problems import (answer_places, cell_sort_key, final_answer, is_scratchpad, num_carries, written_places,
                          written_steps)
from src.runtime import autocast


@torch.no_grad()
def teacher_forced_counts(model, dataset, batch_size, device, precision):
    """(summed loss, correct tokens, answer tokens): sums, so that shards of a split add up to the whole."""
    loss_sum, correct, total = 0.0, 0, 0
    by_length = dataset.lengths.argsort()  # batches of similar length pad little
    for start in range(0, len(dataset), batch_size):
        inputs, targets, _ = dataset.batch(by_length[start:start + batch_size])
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
    """Greedy answers for every problem; prompts are grouped by length so a batch needs no padding. Each answer
    may run as many tokens as the expected one with its end token: a longer one is wrong whatever follows. Not so a
    scratchpad, whose steps may differ in length before a right final answer: it may run to the model's max_length
    (or, without a limit, to twice the longest expected answer)."""
    answers = [None] * len(dataset)
    by_prompt_length = defaultdict(list)
    for index, length in enumerate(dataset.prompt_lengths.tolist()):
        by_prompt_length[length].append(index)
    answer_tokens = (dataset.lengths - dataset.prompt_lengths).tolist()  # with the end token
    scratchpad = is_scratchpad(dataset.format)
    for prompt_length, indices in by_prompt_length.items():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            prompts = dataset.tokens[chunk, :prompt_length].to(device)
            budget = max(answer_tokens[i] for i in chunk)
            if scratchpad:
                budget = (model.max_tokens - prompt_length) if model.max_tokens else 2 * budget
            with autocast(device, precision):
                generated = greedy_generate(model, prompts, budget, tokenizer.end_id)
            for index, ids in zip(chunk, generated):
                answers[index] = tokenizer.decode(ids if scratchpad else ids[:answer_tokens[index]])
    return answers


def cell(correct, count, metric="exact_match"):
    return {metric: correct / count, "count": count}


def tally(dataset, predictions, num_mistakes):
    """Counts of right final answers by operation, operand lengths and carries, of right answer digits by
    operation and place (key ("place", operator, place)) and of right signs (("sign", "-")); scratchpad step
    counts; mistakes. Counters and sums only, so that the tallies of shards add up to the whole split's."""
    correct, count = Counter(), Counter()
    steps = Counter()
    mistakes = []
    for prompt, problem, answer, predicted in zip(dataset.prompts, dataset.problems, dataset.answers, predictions):
        predicted_answer, expected_answer = final_answer(predicted), final_answer(answer)
        right = predicted_answer == expected_answer
        operator, digits = problem.operator, problem.digits_key
        keys = [("all",), ("operation", operator), ("digits", digits), ("grid", operator, digits),
                ("operands", len(problem.operands)), ("length", max(problem.operand_digits))]
        carries = num_carries(problem)
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
        if operator == "-":  # without a scratchpad most mistakes of - are a wrong sign, a comparison of the operands
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


def rank_shard(dataset):
    """This rank's share of a split under torchrun, every world_size-th problem (the whole split otherwise)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return dataset
    return dataset.subset(range(dist.get_rank(), len(dataset), dist.get_world_size()))


def evaluate(model, dataset, tokenizer, batch_size, device, precision, num_mistakes=5):
    """Metrics over the whole split. Under torchrun each rank evaluates every world_size-th problem and the counts
    of all ranks are summed, so every rank returns the metrics of the whole split.

    Exact match compares final answers (after a scratchpad's </think>); scratchpad steps are scored apart."""
    shard = rank_shard(dataset)
    was_training = model.training
    model.eval()
    loss_sum, correct_tokens, answer_tokens = teacher_forced_counts(model, shard, batch_size, device, precision)
    predictions = generate_answers(model, shard, tokenizer, batch_size, device, precision)
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
        "sign_accuracy_by_operation": breakdown(correct, count, "sign", "accuracy"),  # "-" only
        "worst_cells": worst_cells(grid),
        "mistakes": mistakes,
    }
    if steps["problems"]:
        results["scratchpad"] = {"steps_exact_match": steps["all_right"] / steps["problems"],
                                 "step_accuracy": steps["right"] / steps["total"]}
    return results


@torch.no_grad()
def running_sum_readout(model, dataset, batch_size, device, precision):
    """How well the running-sum probe reads each answer digit's column total off the hidden state, by place of
    the digit (units first): {place: {"rmse": in units, "read_right": share of readings that round to the total,
    "count"}}. For a model trained with --running-sum-loss, on a dataset after add_running_sums(). Under torchrun,
    sharded as evaluate() is."""
    shard = rank_shard(dataset)
    squared_error, read_right, count = Counter(), Counter(), Counter()
    was_training = model.training
    model.eval()
    for start in range(0, len(shard), batch_size):
        inputs, _, running_sums = shard.batch(torch.arange(start, min(start + batch_size, len(shard))))
        with autocast(device, precision):
            hidden = model.hidden_states(inputs.to(device))
        readings, running_sums = (10 * model.read_running_sums(hidden)).cpu(), running_sums.cpu()
        has_sum = running_sums.isfinite()  # the sums sit at the answer digits, in the order they are written
        pairs = zip(readings[has_sum].tolist(), running_sums[has_sum].tolist())  # row by row, in one host copy
        for num_digits in has_sum.sum(dim=1).tolist():
            for place, (read, total) in zip(written_places(num_digits, shard.format), pairs):
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


def evaluate_edge_cases(model, edge_sets, tokenizer, batch_size, device, precision, num_mistakes=5):
    """Exact match on the edge cases, by kind; `edge_sets` as edge_case_datasets() builds them for the data."""
    by_kind, mistakes = {}, []
    correct = count = 0
    for kind, cases in edge_sets.items():
        results = evaluate(model, cases, tokenizer, batch_size, device, precision, num_mistakes)
        by_kind[kind] = {"exact_match": results["exact_match"], "count": len(cases)}
        correct += results["num_correct"]
        count += len(cases)
        mistakes += results["mistakes"]
    return {"exact_match": correct / max(count, 1), "count": count, "by_kind": by_kind,
            "mistakes": mistakes[:num_mistakes]}


def scalar_metrics(results, prefix):
    """The results as flat {name: number} for W&B: totals, then each operation, two-operand cell, carry count,
    number of operands, answer digit place, edge case and scratchpad score."""
    metrics = {f"{prefix}/{key}": results[key] for key in ("loss", "token_accuracy", "exact_match")}
    for operator, values in results["exact_match_by_operation"].items():
        metrics[f"{prefix}/exact_match/{operator}"] = values["exact_match"]
    for operator, cells in results["exact_match_by_operation_and_operand_digits"].items():
        metrics.update({f"{prefix}/by_digits/{operator}/{digits}": c["exact_match"] for digits, c in cells.items()
                        if digits.count("x") == 1})  # the heatmap's cells; longer problems by count below
    metrics.update({f"{prefix}/by_length/{n}": c["exact_match"] for n, c in results["exact_match_by_length"].items()})
    by_operands = results["exact_match_by_num_operands"]
    if len(by_operands) > 1:
        metrics.update({f"{prefix}/by_operands/{n}": c["exact_match"] for n, c in by_operands.items()})
    for operator, cells in results["exact_match_by_carries"].items():
        metrics.update({f"{prefix}/by_carries/{operator}/{n}": c["exact_match"] for n, c in cells.items()})
    for operator, places in results["digit_accuracy_by_place"].items():
        metrics.update({f"{prefix}/digit_accuracy/{operator}/{place}": c["accuracy"] for place, c in places.items()})
    metrics.update({f"{prefix}/sign_accuracy/{operator}": c["accuracy"]
                    for operator, c in results["sign_accuracy_by_operation"].items()})
    for name, value in results.get("scratchpad", {}).items():
        metrics[f"{prefix}/scratchpad/{name}"] = value
    if "running_sum_probe" in results:  # in units of the column total
        metrics[f"{prefix}/running_sum_probe/rmse"] = pooled_rmse(results["running_sum_probe"])
        metrics.update({f"{prefix}/running_sum_probe/rmse/{place}": reading["rmse"]
                        for place, reading in results["running_sum_probe"].items()})
    if "edge_cases" in results:
        metrics[f"{prefix}/edge_cases/exact_match"] = results["edge_cases"]["exact_match"]
        metrics.update({f"{prefix}/edge_cases/{kind}": c["exact_match"]
                        for kind, c in results["edge_cases"]["by_kind"].items()})
    return metrics


def length_table(by_length, per_line=10):
    """Exact match (%) by length, as text lines of `per_line` lengths: ['exact match (%) by length 1:100.0 ...']."""
    items = list(by_length.items())
    return ["exact match (%) by length " + " ".join(f"{length}:{100 * cell['exact_match']:.1f}"
                                                     for length, cell in items[start:start + per_line])
            for start in range(0, len(items), per_line)]


def length_bands(by_length, band):
    """{"11-20": exact match over all problems of those lengths, ...}: bands of `band` lengths, aligned to
    multiples of it (1-10, 11-20...)."""
    totals = {}
    for length, cell in by_length.items():
        first = (int(length) - 1) // band * band + 1
        correct, count = totals.get(first, (0, 0))
        totals[first] = (correct + cell["exact_match"] * cell["count"], count + cell["count"])
    return {f"{first}-{first + band - 1}": correct / count for first, (correct, count) in sorted(totals.items())}


def sign_report(exact_match, sign):
    """' | sign right 0.9859 (141 of 146 mistakes)': how many of an operation's mistakes are a wrong sign."""
    if sign is None:
        return ""
    mistakes = round(exact_match["count"] * (1 - exact_match["exact_match"]))
    wrong_signs = round(sign["count"] * (1 - sign["accuracy"]))
    return f" | sign right {sign['accuracy']:.4f} ({wrong_signs} of {mistakes} mistakes)"


def log_report(results, log, split):
    """The numbers a reader looks at first: per operation, carries, answer digits by place, the running-sum probe,
    scratchpad steps, edge cases, worst cells and mistakes (the totals are logged by the caller)."""
    for operator, values in results["exact_match_by_operation"].items():
        carries = results["exact_match_by_carries"].get(operator, {})
        by_carries = " | by carries " + " ".join(f"{n}:{c['exact_match']:.3f}" for n, c in carries.items()) \
            if carries else ""
        log.info(f"{split} {operator}: exact match {values['exact_match']:.4f} ({values['count']} problems)"
                 f"{sign_report(values, results['sign_accuracy_by_operation'].get(operator))}{by_carries}")
    for operator, places in results["digit_accuracy_by_place"].items():
        log.info(f"{split} {operator}: answer digits right by place (units first) " +
                 " ".join(f"{place}:{c['accuracy']:.3f}" for place, c in places.items()))
    for place, reading in results.get("running_sum_probe", {}).items():
        log.info(f"{split} running-sum probe, answer digit place {place}: rmse {reading['rmse']:.2f} | reads the "
                 f"column total to the unit {reading['read_right']:.3f} ({reading['count']} digits)")
    if "scratchpad" in results:
        log.info(f"{split} scratchpad: all steps right {results['scratchpad']['steps_exact_match']:.4f} | "
                 f"step accuracy {results['scratchpad']['step_accuracy']:.4f}")
    if "edge_cases" in results:
        edge = results["edge_cases"]
        log.info(f"{split} edge cases: exact match {edge['exact_match']:.4f} ({edge['count']} problems) | " +
                 " | ".join(f"{kind} {c['exact_match']:.3f}" for kind, c in edge["by_kind"].items()))
    by_length = results["exact_match_by_length"]
    if len(by_length) > 1:
        for line in length_table(by_length):
            log.info(f"{split} {line}")
    for worst in results["worst_cells"]:
        log.info(f"{split} weak cell {worst['operation']} {worst['operand_digits']} digits: exact match "
                 f"{worst['exact_match']:.4f} ({worst['count']} problems)")
    for mistake in results["mistakes"] + results.get("edge_cases", {}).get("mistakes", []):
        log.info(f"{split} wrong: {mistake['prompt']}{mistake['predicted']}  (expected {mistake['expected']})")
