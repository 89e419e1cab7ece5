"""Edge cases that random sampling rarely draws: all-9 operands, carries (borrows) through every digit, zeros.

They are built for the operations, lengths and numbers of operands of the data a model is evaluated on, and scored
apart from the held-out split (they may overlap the training data: they test coverage, not generalisation).
"""

import itertools

import numpy as np

from src.data import ArithmeticDataset, carry_pattern_pair
from src.problems import Problem, smallest_with_digits

EDGE_CASE_SEED = 0


def nines(num_digits):
    return 10 ** num_digits - 1


def random_with_digits(num_digits, rng):
    return int(rng.integers(smallest_with_digits(num_digits), 10 ** num_digits))


def edge_cases(operators, max_digits, max_operands):
    """{kind: [Problem]} for every operation and pair of operand lengths up to max_digits (and, with more operands,
    all-9 and zero operands of max_digits digits)."""
    rng = np.random.default_rng(EDGE_CASE_SEED)
    cases = {"all nines": [], "carry through every digit": [], "zero operand": [], "zero result": []}
    for operator in operators:
        for la, lb in itertools.product(range(1, max_digits + 1), repeat=2):
            cases["all nines"].append(Problem(operator, (nines(la), nines(lb))))
            cases["zero operand"] += [Problem(operator, (0, random_with_digits(lb, rng))),
                                      Problem(operator, (random_with_digits(la, rng), 0))]
            if operator == "+" and la == lb or operator == "-" and la == lb > 1:  # every column passes a carry on (a borrow: all but the first digit's)
                chain = set(range(la if operator == "+" else la - 1))
                cases["carry through every digit"] += [
                    Problem(operator, carry_pattern_pair(operator, (la, lb), chain, rng)) for _ in range(2)]
        for length in range(1, max_digits + 1):
            cases["zero operand"].append(Problem(operator, (0, 0)))
            if operator == "+":  # 999+1 and 1+999: a carry from the last column through all the others
                cases["carry through every digit"] += [Problem("+", (nines(length), 1)), Problem("+", (1, nines(length)))]
            if operator == "-":  # 1000-1 borrows through every digit; x-x is zero
                cases["carry through every digit"] += [Problem("-", (10 ** length, 1))] if length < max_digits else []
                value = random_with_digits(length, rng)
                cases["zero result"].append(Problem("-", (value, value)))
            if operator == "*":
                cases["zero result"].append(Problem("*", (random_with_digits(length, rng), 0)))
        for num_operands in range(3, max_operands + 1):
            cases["all nines"].append(Problem(operator, (nines(max_digits),) * num_operands))
            cases["zero operand"].append(Problem(operator, (0,) * num_operands))
    return {kind: list(dict.fromkeys(problems)) for kind, problems in cases.items() if problems}


def edge_case_datasets(dataset, tokenizer, max_length):
    """{kind: ArithmeticDataset} of the edge cases for the operations and lengths found in `dataset`, rendered in
    its format; cases longer than the model's max_length are left out."""
    operators = sorted({problem.operator for problem in dataset.problems})
    max_digits = dataset.operand_width or max(max(problem.operand_digits) for problem in dataset.problems)
    max_operands = max(len(problem.operands) for problem in dataset.problems)
    datasets = {}
    for kind, problems in edge_cases(operators, max_digits, max_operands).items():
        texts = [problem.render(dataset.format, dataset.operand_width) for problem in problems]
        texts = [text for text in texts if len(tokenizer.encode(text)) <= max_length]
        if texts:
            datasets[kind] = ArithmeticDataset(texts, tokenizer, max_length, source=f"edge cases ({kind})",
                                               data_format=dataset.format)
    return datasets
