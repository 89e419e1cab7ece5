"""Edge cases that random sampling rarely draws: all-9 operands, carries (borrows) through every digit, zeros, and
what each operation adds of its own (operations.py).

They are built for the operations, lengths and numbers of operands of the data a model is evaluated on, and scored
apart from the held-out split (they may overlap the training data: they test coverage, not generalisation).
"""

import itertools

import numpy as np

from math_llm.data import ArithmeticDataset
from math_llm.data_generation import INT64_MAX, carry_pattern_pair, smallest_with_digits
from math_llm.operations import nines, operation
from math_llm.problems import Problem

EDGE_CASE_SEED = 0
# Up to this many operand lengths, edge cases cover every pair of them; beyond, equal lengths and each length
# against the shortest (a test set of 11 to 100 digits would otherwise need 8,100 pairs).
ALL_PAIRS_UP_TO = 12


def random_with_digits(num_digits, rng):
    """Uniform among the numbers of exactly this many digits: an int64 draw while they fit, else digit by digit."""
    if 10 ** num_digits - 1 <= INT64_MAX:
        return int(rng.integers(smallest_with_digits(num_digits), 10 ** num_digits))
    digits = rng.integers(0, 10, num_digits)
    if num_digits > 1:
        digits[0] = rng.integers(1, 10)
    return int("".join(map(str, digits)))


def length_pairs(min_digits, max_digits, same_length=False):
    lengths = range(min_digits, max_digits + 1)
    if same_length:
        return [(n, n) for n in lengths]
    if len(lengths) <= ALL_PAIRS_UP_TO:
        return list(itertools.product(lengths, repeat=2))
    return list(dict.fromkeys([(n, n) for n in lengths] + [(n, min_digits) for n in lengths] +
                              [(min_digits, n) for n in lengths]))


def edge_cases(operators, max_digits, max_operands, min_digits=1, same_length=False):
    """{kind: [Problem]} for every operation and pair of operand lengths from min_digits to max_digits (see
    length_pairs; equal lengths only for same-length data; and, with more operands, all-9 and zero operands of
    max_digits digits). Zero operands only where 1-digit operands belong to the data, and not in same-length data;
    operands an operation does not take (a zero divisor) are left out."""
    rng = np.random.default_rng(EDGE_CASE_SEED)
    cases = {"all nines": [], "carry through every digit": [], "zero operand": [], "zero result": []}
    with_zeros = min_digits == 1 and not same_length

    def add(kind, op, operands):
        if op.refusal(operands) is None:
            cases[kind].append(Problem(op.symbol, operands))

    for op in map(operation, operators):
        if with_zeros:
            add("zero operand", op, (0, 0))
        for la, lb in length_pairs(min_digits, max_digits, same_length):
            add("all nines", op, (nines(la), nines(lb)))
            if with_zeros:
                add("zero operand", op, (0, random_with_digits(lb, rng)))
                add("zero operand", op, (random_with_digits(la, rng), 0))
            if op.carries and (chain := op.carries.full_chain(la, lb)) is not None:
                for _ in range(2):  # two random pairs, each both ways round
                    larger, smaller = carry_pattern_pair(op.carries, la, lb, chain, rng)
                    add("carry through every digit", op, (larger, smaller))
                    add("carry through every digit", op, (smaller, larger))
        for length in range(min_digits, max_digits + 1):
            for kind, operands in op.special_cases(length, random_with_digits(length, rng), with_zeros):
                add(kind, op, operands)
        for num_operands in range(3, max_operands + 1):
            add("all nines", op, (nines(max_digits),) * num_operands)
            if with_zeros:
                add("zero operand", op, (0,) * num_operands)
    return {kind: list(dict.fromkeys(problems)) for kind, problems in cases.items() if problems}


def edge_case_datasets(dataset, tokenizer, model=None):
    """{kind: ArithmeticDataset} of the edge cases for the operations, lengths and operand counts `dataset` was
    generated with (its metadata; for a hand-written file, what its problems use), rendered in its format; cases
    `model` cannot read are left out (all-9 operands reach the longest answer, which sampled data may not)."""
    operators, min_digits, max_digits, max_operands, same_length = generated_ranges(dataset)
    metadata = {"format": dataset.format.name}
    datasets = {}
    for kind, problems in edge_cases(operators, max_digits, max_operands, min_digits, same_length).items():
        cases = ArithmeticDataset([problem.render(dataset.format, dataset.operand_width) for problem in problems],
                                  tokenizer, source=f"edge cases ({kind})", metadata=metadata)
        unreadable = {index for index, _ in model.unreadable(cases.tokens, cases.lengths)} if model else set()
        if len(unreadable) < len(cases):
            datasets[kind] = cases.subset(index for index in range(len(cases)) if index not in unreadable)
    return datasets


def generated_ranges(dataset):
    """(operators, min digits, max digits, max operands, whether operands are all of one length) of the data: from
    the metadata written at generation, so that val, test and any split share one set of edge cases; else from the
    problems themselves."""
    metadata = dataset.metadata
    if isinstance(metadata.get("operations"), str) and isinstance(metadata.get("max_digits"), int):
        return (sorted(metadata["operations"].split(",")), metadata.get("min_digits", 1),
                dataset.operand_width or metadata["max_digits"], metadata.get("max_operands", 2),
                metadata.get("sampling") == "same-length")
    return (sorted({problem.operator for problem in dataset.problems}),
            min(min(problem.operand_digits) for problem in dataset.problems),
            dataset.operand_width or max(max(problem.operand_digits) for problem in dataset.problems),
            max(len(problem.operands) for problem in dataset.problems),
            all(len(set(problem.operand_digits)) == 1 for problem in dataset.problems))
