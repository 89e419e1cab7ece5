"""Edge cases that random sampling rarely draws: all-9 operands, carries (borrows) through every digit, zeros.

They are built for the operations, lengths and numbers of operands of the data a model is evaluated on, and scored
apart from the held-out split (they may overlap the training data: they test coverage, not generalisation).
"""

import itertools

import numpy as np
import torch

from src.data import INT64_MAX, ArithmeticDataset, carry_pattern_pair
from src.model import digit_places
from src.problems import OPERATIONS, Problem, smallest_with_digits

EDGE_CASE_SEED = 0


def nines(num_digits):
    return 10 ** num_digits - 1


def random_with_digits(num_digits, rng):
    """Uniform among the numbers of exactly this many digits: an int64 draw while they fit, else digit by digit."""
    if 10 ** num_digits - 1 <= INT64_MAX:
        return int(rng.integers(smallest_with_digits(num_digits), 10 ** num_digits))
    digits = rng.integers(0, 10, num_digits)
    if num_digits > 1:
        digits[0] = rng.integers(1, 10)
    return int("".join(map(str, digits)))


# Up to this many operand lengths, edge cases cover every pair of them; beyond, equal lengths and each length
# against the shortest (a test set of 11 to 100 digits would otherwise need 8,100 pairs).
ALL_PAIRS_UP_TO = 12


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
    max_digits digits). Zero operands only where 1-digit operands belong to the data, and not in same-length data."""
    rng = np.random.default_rng(EDGE_CASE_SEED)
    cases = {"all nines": [], "carry through every digit": [], "zero operand": [], "zero result": []}
    with_zeros = min_digits == 1 and not same_length
    for operator in operators:
        if with_zeros:
            cases["zero operand"].append(Problem(operator, (0, 0)))
        for la, lb in length_pairs(min_digits, max_digits, same_length):
            cases["all nines"].append(Problem(operator, (nines(la), nines(lb))))
            if with_zeros:
                cases["zero operand"] += [Problem(operator, (0, random_with_digits(lb, rng))),
                                          Problem(operator, (random_with_digits(la, rng), 0))]
            if operator == "+" and la >= lb or operator == "-" and la >= lb > 1:
                cases["carry through every digit"] += full_chains(operator, la, lb, rng)
        for length in range(min_digits, max_digits + 1):
            value = random_with_digits(length, rng)
            if operator == "+" and with_zeros:  # 999+1: a carry from the first column through all the others
                cases["carry through every digit"] += [Problem("+", (nines(length), 1)), Problem("+", (1, nines(length)))]
            elif operator == "-":  # x-x is zero
                cases["zero result"].append(Problem("-", (value, value)))
            elif operator == "*" and with_zeros:
                cases["zero result"].append(Problem("*", (value, 0)))
        if operator == "-" and with_zeros:  # 1000-1 borrows through every digit
            cases["carry through every digit"] += [Problem("-", (10 ** length, 1)) for length in range(1, max_digits)]
        for num_operands in range(3, max_operands + 1):
            cases["all nines"].append(Problem(operator, (nines(max_digits),) * num_operands))
            if with_zeros:
                cases["zero operand"].append(Problem(operator, (0,) * num_operands))
    return {kind: list(dict.fromkeys(problems)) for kind, problems in cases.items() if problems}


def full_chains(operator, longer, shorter, rng):
    """Two random pairs, each both ways round, in which every column that can pass a carry (borrow) on does: all
    of them for +, all but the larger operand's top one for -."""
    chain = set(range(longer if operator == "+" else longer - 1))
    problems = []
    for _ in range(2):
        larger, smaller = carry_pattern_pair(operator, longer, shorter, chain, rng)
        problems += [Problem(operator, (larger, smaller)), Problem(operator, (smaller, larger))]
    return problems


def edge_case_datasets(dataset, tokenizer, max_length, digit_positions=None):
    """{kind: ArithmeticDataset} of the edge cases for the operations, lengths and operand counts `dataset` was
    generated with (its metadata; for a hand-written file, what its problems use), rendered in its format; cases
    the model cannot read are left out: longer than `max_length` (None for no limit), or with a digit place beyond
    an abacus model's `digit_positions` (all-9 operands reach the longest answer, which sampled data may not)."""
    operators, min_digits, max_digits, max_operands, same_length = generated_ranges(dataset)
    datasets = {}
    for kind, problems in edge_cases(operators, max_digits, max_operands, min_digits, same_length).items():
        texts = [problem.render(dataset.format, dataset.operand_width) for problem in problems]
        texts = [text for text in texts if fits(tokenizer.encode(text), max_length, digit_positions)]
        if texts:
            datasets[kind] = ArithmeticDataset(texts, tokenizer, max_length, source=f"edge cases ({kind})",
                                               data_format=dataset.format)
    return datasets


def fits(ids, max_length, digit_positions):
    if max_length is not None and len(ids) > max_length:
        return False
    return digit_positions is None or int(digit_places(torch.tensor([ids])).max()) < digit_positions


def generated_ranges(dataset):
    """(operators, min digits, max digits, max operands, whether operands are all of one length) of the data: from
    the metadata written at generation, so that val, test and any split share one set of edge cases; else from the
    problems themselves."""
    metadata = dataset.metadata
    operations = metadata.get("operations")  # a list in files from before --operations, a string since
    if isinstance(operations, str):
        operations = operations.split(",")
    if isinstance(operations, list) and isinstance(metadata.get("max_digits"), int):
        return (sorted(set(operations) & OPERATIONS.keys()), metadata.get("min_digits", 1),
                dataset.operand_width or metadata["max_digits"], metadata.get("max_operands", 2),
                metadata.get("sampling") == "same-length")
    return (sorted({problem.operator for problem in dataset.problems}),
            min(min(problem.operand_digits) for problem in dataset.problems),
            dataset.operand_width or max(max(problem.operand_digits) for problem in dataset.problems),
            max(len(problem.operands) for problem in dataset.problems),
            all(len(set(problem.operand_digits)) == 1 for problem in dataset.problems))
