"""Generation of datasets: DataConfig, and distinct problems sampled for it (balanced over operations, operand counts
and operand lengths, or as --sampling says), shuffled into disjoint train/val/test splits of rendered examples.
"""

import itertools
import logging
import math
import random
from collections import Counter
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from math_llm.adderboard import OPERAND_DIGITS, protocol_pairs
from math_llm.errors import ConfigError
from math_llm.flags import choice_problems, option
from math_llm.formats import FORMATS, data_format
from math_llm.operations import OPERATION_NAMES, OPERATIONS, operation
from math_llm.problems import Problem, cell_sort_key, parse_prompt, scratchpad_refusal, split_example

MAX_SUPPORTED_DIGITS = 1000  # far below Python's 4300-digit limit on int <-> str; products have twice as many
INT64_MAX = 2 ** 63 - 1  # operands up to this are sampled with numpy, longer ones as Python ints
MAX_LENGTH_TUPLES = 10_000  # combinations of operand lengths listed one by one; more are drawn per problem
SAMPLINGS = {
    "balanced": "every combination of operand lengths equally likely (the default)",
    "uniform": "operands uniform in 0 .. 10^max_digits - 1 (from 10^(min_digits - 1) with --min-digits), so most "
               "have max_digits digits",
    "mixed": "half the problems as balanced draws them, half as uniform does: the long operands that uniform test "
             "sets are made of dominate, and short ones, zeros and the like are still common",
    "carry-balanced": "as balanced, and within each length pair every number of carries (borrows for -) equally "
                      "likely, so long carry chains are common (+ and - with two operands)",
    "same-length": "all operands of a problem have the same number of digits, every length equally likely (the "
                   "n-digit + n-digit test sets of length generalisation)",
    "length-weighted": "as balanced, each combination of operand lengths weighted by the product of its lengths (the "
                       "digit products of a multiplication: 5x5 gets 25 times the share of 1x1), so the long "
                       "problems that take longest to learn are common and short ones still present",
    "adderboard": "AdderBoard's test (github.com/anadim/AdderBoard verify.py --seed SEED): its 10 edge cases (9 "
                  "distinct), then --num-examples pairs drawn in its order, a test set of 10-digit additions alone "
                  "(--test-only --max-digits 10)",
}
log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    num_examples: int = option(10_000, "total problems over all splits, capped at the number of distinct problems")
    max_digits: int = option(2, "operands have up to this many digits, any length up to 1000")
    min_digits: int = option(1, "operands have at least this many digits, e.g. a test set of longer numbers than "
                                "training had: --min-digits 11 --max-digits 100")
    val_fraction: float = option(0.1, "share of problems in val.json")
    test_fraction: float = option(0.1, "share of problems in test.json")
    seed: int = option(42, "random seed")
    format: str = option("plain", "how numbers are written: " + "; ".join(
        f"{name}: {fmt.example}" for name, fmt in FORMATS.items()), choices=FORMATS)
    operations: str = option("+", "comma-separated operations mixed in one dataset, any of "
                                  f"{' '.join(OPERATIONS)} or {' '.join(OPERATION_NAMES)} (a value that starts with "
                                  "- needs the = form: --operations=-,*); subtraction may be negative, division "
                                  "writes quotient and remainder (17/5=3r2); each equally represented unless "
                                  "--operation-weights")
    operation_weights: str | None = option(None, "relative shares of the operations, one per operation of "
                                                 "--operations and in its order, e.g. --operations +,-,* "
                                                 "--operation-weights 1,1,2 makes half the problems products "
                                                 "(default: equal shares)")
    max_operands: int = option(2, "problems have 2 to this many operands, e.g. 12+7+30=49, one operation per "
                                  "problem, evaluated left to right; each count equally represented")
    sampling: str = option("balanced", "; ".join(f"{name}: {text}" for name, text in SAMPLINGS.items()),
                           choices=SAMPLINGS)
    test_only: bool = option(False, "write every problem to test.json and no train/val files: a test set for a "
                                    "model trained on other data, e.g. longer numbers")

    def __post_init__(self):
        self.operations = ",".join(OPERATION_NAMES.get(name, name) for name in self.operations.split(","))
        if self.num_examples < 3:
            raise ConfigError(f"--num-examples must be at least 3 (one per split), got {self.num_examples}")
        fractions = (self.val_fraction, self.test_fraction)
        if not (all(0 < fraction < 1 for fraction in fractions) and sum(fractions) < 1):
            raise ConfigError(f"--val-fraction and --test-fraction must be in (0, 1) and leave room for training, "
                              f"got {self.val_fraction} and {self.test_fraction}")
        if not 1 <= self.max_digits <= MAX_SUPPORTED_DIGITS:
            raise ConfigError(f"--max-digits must be between 1 and {MAX_SUPPORTED_DIGITS}, got {self.max_digits}")
        if not 1 <= self.min_digits <= self.max_digits:
            raise ConfigError(f"--min-digits must be between 1 and --max-digits ({self.max_digits}), "
                              f"got {self.min_digits}")
        if problems := choice_problems(self):
            raise ConfigError("; ".join(problems))
        operators = self.operators
        if not operators or len(set(operators)) != len(operators) or not set(operators) <= OPERATIONS.keys():
            raise ConfigError(f"--operations must be a comma-separated subset of {','.join(OPERATIONS)} (or "
                              f"{','.join(OPERATION_NAMES)}), got {self.operations!r}")
        if self.operation_weights is not None:
            weights = self.operation_weights.split(",")
            try:
                valid = len(weights) == len(operators) and all(0 < float(weight) < math.inf for weight in weights)
            except ValueError:
                valid = False
            if not valid:
                raise ConfigError(f"--operation-weights must be {len(operators)} positive numbers, one per "
                                  f"operation of --operations {self.operations}, got {self.operation_weights!r}")
        if self.max_operands < 2:
            raise ConfigError(f"--max-operands must be at least 2, got {self.max_operands}")
        if self.sampling == "adderboard" and not (self.test_only and self.operations == "+" and self.max_operands == 2
                                                  and self.min_digits == 1 and self.max_digits == OPERAND_DIGITS):
            raise ConfigError(f"--sampling adderboard draws AdderBoard's test set: use it with --test-only, "
                              f"--operations +, --max-operands 2, --min-digits 1 and --max-digits {OPERAND_DIGITS}")
        without_carries = [op.symbol for op in self.operation_list if op.carries is None]
        if self.sampling == "carry-balanced" and (self.max_operands > 2 or without_carries):
            raise ConfigError(f"--sampling carry-balanced counts the carries (borrows) of problems with two operands"
                              f"{'; ' + ' '.join(without_carries) + ' has none' if without_carries else ''}: use "
                              f"--max-operands 2 and operations with carries (+ -)")
        for op in self.operation_list:
            if op.max_operands is not None and self.max_operands > op.max_operands:
                raise ConfigError(f"{op.name} ({op.symbol}) takes at most {op.max_operands} operands; use "
                                  f"--max-operands {op.max_operands}")
            if refusal := scratchpad_refusal(self.data_format, op, self.max_operands):
                raise ConfigError(refusal)

    @property
    def operators(self):
        return tuple(self.operations.split(","))

    @property
    def operation_list(self):
        return [operation(symbol) for symbol in self.operators]

    @property
    def data_format(self):
        return data_format(self.format)

    def operation_weight(self, operator):
        if self.operation_weights is None:
            return 1.0
        return float(self.operation_weights.split(",")[self.operators.index(operator)])


# ---------------------------------------------------------------------------------------------------------------
# Quotas

def fill_quotas(total, capacities):
    """Split `total` as evenly as possible over bins of limited capacity (water filling); returns per-bin counts."""
    quotas = [0] * len(capacities)
    remaining = total
    order = sorted(range(len(capacities)), key=lambda i: capacities[i])
    for position, i in enumerate(order):
        bins_left = len(order) - position
        quotas[i] = min(capacities[i], -(-remaining // bins_left))
        remaining -= quotas[i]
    return quotas


def weighted_quotas(total, weights, capacities):
    """Split `total` over bins in proportion to `weights`, each bin capped at its capacity (what a full bin cannot
    take goes to the others, in proportion again)."""
    quotas = [0] * len(weights)
    open_bins = [i for i, capacity in enumerate(capacities) if capacity > 0]
    while total > sum(quotas) and open_bins:
        remaining = total - sum(quotas)
        weight_sum = sum(weights[i] for i in open_bins)
        for i in open_bins:
            quotas[i] += min(capacities[i] - quotas[i], math.floor(remaining * weights[i] / weight_sum))
        if sum(quotas) == total - remaining:  # every share rounded down to 0: one more each, heaviest first
            for i in sorted(open_bins, key=lambda i: -weights[i])[:remaining]:
                quotas[i] += 1
        open_bins = [i for i in open_bins if quotas[i] < capacities[i]]
    return quotas


def smallest_with_digits(num_digits, nonzero=False):
    """The smallest number of exactly this many digits (0 counts as a 1-digit number, unless `nonzero`)."""
    return 10 ** (num_digits - 1) if num_digits > 1 or nonzero else 0


def operand_range(num_digits, nonzero=False):
    """(lowest, how many) of the numbers with exactly this many digits."""
    low = smallest_with_digits(num_digits, nonzero)
    return low, 10 ** num_digits - low


def length_ranges(op, lengths):
    """(lowest, how many) of each operand of `op` with these digit counts."""
    return [operand_range(length, position in op.nonzero_operands) for position, length in enumerate(lengths)]


# ---------------------------------------------------------------------------------------------------------------
# Carries: carry-balanced sampling, and the chains the edge cases use

def sample_carry_balanced(op, lengths, count, rng):
    """`count` distinct pairs with these digit counts whose number of carries (borrows), as the operation counts
    them, is uniform over what the length pair allows; subtraction gives a negative result half the time when the
    lengths are equal (and always when a is shorter)."""
    longer, shorter = max(lengths), min(lengths)
    pairs = {}  # distinct, in the order drawn
    for _ in range(50 * count + 1000 if count else 0):
        carrying = sample_carry_columns(op.carries, longer, shorter, rng)
        larger, smaller = carry_pattern_pair(op.carries, longer, shorter, carrying, rng)
        a_first = lengths[0] > lengths[1] or (lengths[0] == lengths[1] and (
            not op.carries.equal_lengths_either_way or rng.random() < 0.5))
        pairs[(larger, smaller) if a_first else (smaller, larger)] = None
        if len(pairs) == count:
            break
    if len(pairs) == count:
        return np.array(list(pairs), dtype=object).reshape(-1, 2)  # Python ints: any length
    raise ConfigError(f"--sampling carry-balanced found only {len(pairs)} distinct {op.symbol} problems with "
                      f"{lengths[0]}x{lengths[1]} digits where {count} were needed; ask for fewer --num-examples")


def sample_carry_columns(carries, longer, shorter, rng):
    """The columns (least significant first) that pass a carry (borrow) on: first their number, uniform over what
    is possible, then a set of that size, uniform over the possible ones. Columns the shorter operand shares can
    carry independently; past it a carry continues only as a chain from the last shared column (a 9 plus a carry,
    a 0 minus a borrow). The larger operand's top column never borrows."""
    shared, beyond = carries.free_columns(longer, shorter)
    number = int(rng.integers(0, shared + beyond + 1))
    # ways[t]: sets with a chain of t columns past the shared ones (t > 0 needs the last shared column to carry)
    ways = [math.comb(shared, number)] + [math.comb(shared - 1, number - t - 1) if number - t - 1 >= 0 else 0
                                          for t in range(1, beyond + 1)]
    chain = int(rng.choice(len(ways), p=np.array(ways) / sum(ways)))
    if chain == 0:
        return set(rng.choice(shared, size=number, replace=False).tolist())
    inside = rng.choice(shared - 1, size=number - chain - 1, replace=False).tolist()
    return {*inside, shorter - 1, *range(shorter, shorter + chain)}


def carry_pattern_pair(carries, longer, shorter, carrying, rng):
    """(larger, smaller) operands with these digit counts in which column i passes a carry (borrow) on exactly
    when i is in `carrying` (a set from sample_carry_columns); the digits are uniform among those that do."""
    digits = [[], []]
    carry = 0
    for column in range(longer):
        top = [column == longer - 1 and longer > 1, column == shorter - 1 and shorter > 1]  # no leading zeros
        pairs = [(x, y) for x in range(1 if top[0] else 0, 10)
                 for y in (range(1 if top[1] else 0, 10) if column < shorter else [0])]
        options = [(x, y) for x, y in pairs if carries.passes_on(x, y, carry) == (column in carrying)]
        x, y = options[rng.integers(len(options))]
        digits[0].append(x)
        if column < shorter:
            digits[1].append(y)
        carry = int(column in carrying)
    return tuple(int("".join(map(str, reversed(side)))) for side in digits)


# ---------------------------------------------------------------------------------------------------------------
# Distinct operand tuples

def sample_distinct_tuples(ranges, count, rng):
    """`count` distinct operand tuples, operand i uniform in range(low_i, low_i + size_i), without replacement.
    Returns an array [count, len(ranges)]: int64, or of Python ints (dtype object) for operands past int64."""
    if max(low + size - 1 for low, size in ranges) > INT64_MAX:
        return sample_distinct_long_tuples(ranges, count, rng)
    lows = np.array([low for low, _ in ranges], dtype=np.int64)
    sizes = [size for _, size in ranges]
    space = math.prod(sizes)
    if space <= 2_000_000 or 2 * count >= space:
        flat = rng.choice(space, size=count, replace=False)
        columns = []
        for size in reversed(sizes):  # mixed-radix digits of the flat index, last operand fastest
            columns.append(flat % size)
            flat = flat // size
        return lows + np.stack(columns[::-1], axis=1)
    tuples = np.empty((0, len(ranges)), dtype=np.int64)
    while len(tuples) < count:  # rejection sampling; the space is at least twice as large as `count`
        draw = int((count - len(tuples)) * 1.1) + 16
        fresh = np.stack([rng.integers(low, low + size, draw) for low, size in ranges], axis=1)
        tuples = np.concatenate([tuples, fresh])
        _, first = np.unique(tuples, axis=0, return_index=True)
        tuples = tuples[np.sort(first)]
    return tuples[:count]


def sample_distinct_long_tuples(ranges, count, rng):
    """As sample_distinct_tuples, for operands past int64 (a space of at least 10^18 tuples, so repeats are rare):
    Python's exact big-integer randrange, from a generator seeded by `rng`."""
    draw = random.Random(int(rng.integers(INT64_MAX)))
    tuples = {}
    while len(tuples) < count:
        tuples[tuple(low + draw.randrange(size) for low, size in ranges)] = None
    return np.array(list(tuples), dtype=object).reshape(count, len(ranges))


# ---------------------------------------------------------------------------------------------------------------
# The dataset

def progress_disabled(count):
    """tqdm's `disable` for a loop over `count` items: no bar for fewer than 200,000 (done in moments), and None
    otherwise, a bar only when stderr is a terminal, so that redirected output holds no carriage returns."""
    return True if count < 200_000 else None


def sample_group(op, num_operands, count, config, rng):
    """`count` distinct operand tuples for one (operation, number of operands) group of the dataset."""
    if config.sampling == "uniform":
        ranges = [operand_range(config.min_digits, position in op.nonzero_operands) for position in range(num_operands)]
        return sample_distinct_tuples([(low, 10 ** config.max_digits - low) for low, _ in ranges], count, rng)
    num_lengths = config.max_digits - config.min_digits + 1
    if config.sampling in ("balanced", "length-weighted", "mixed") and \
            num_lengths ** num_operands > min(count, MAX_LENGTH_TUPLES):
        return sample_lengths_per_problem(op, num_operands, count, config, rng)
    length_tuples = operand_length_tuples(config, num_operands)
    capacities = [math.prod(size for _, size in length_ranges(op, lengths)) for lengths in length_tuples]
    if config.sampling == "mixed":  # half balanced (equal weights), half uniform (weights ~ how many problems exist)
        weights = [0.5 / len(capacities) + 0.5 * capacity / sum(capacities) for capacity in capacities]
        quotas = weighted_quotas(count, weights, capacities)
    elif config.sampling == "length-weighted":
        quotas = weighted_quotas(count, [math.prod(lengths) for lengths in length_tuples], capacities)
    else:
        quotas = fill_quotas(count, capacities)
    parts = []
    for lengths, quota in tqdm(list(zip(length_tuples, quotas)), desc=f"sampling {op.symbol}",
                               unit="length tuple", disable=progress_disabled(count), leave=False):
        if config.sampling == "carry-balanced":
            parts.append(sample_carry_balanced(op, lengths, quota, rng))
        else:
            parts.append(sample_distinct_tuples(length_ranges(op, lengths), quota, rng))
    return np.concatenate(parts)


def sample_lengths_per_problem(op, num_operands, count, config, rng):
    """sample_group where the combinations of operand lengths are too many to list (10 operands of 1-10 digits have
    10^10), or more than the problems to draw (quotas of 0 or 1 would go to the shortest): each problem draws its
    operands' lengths independently, which gives every combination the share the sampling gives it (equal; by the
    product of its lengths; half equal, half by how many problems it holds), then each operand uniformly among the
    numbers of its length. Distinct by rejection: such spaces are vast."""
    lengths = np.arange(config.min_digits, config.max_digits + 1)
    how_many = np.array([float(operand_range(int(length))[1]) for length in lengths])
    shares = {"length-weighted": lengths / lengths.sum(), "by-count": how_many / how_many.sum()}
    nonzero = np.array([position in op.nonzero_operands for position in range(num_operands)])
    exact = random.Random(int(rng.integers(INT64_MAX)))  # for operands past int64
    tuples = {}  # insertion-ordered: the first of any repeats is kept
    while len(tuples) < count:
        draw = int((count - len(tuples)) * 1.1) + 16
        digits = rng.choice(lengths, size=(draw, num_operands), p=shares.get(config.sampling))
        if config.sampling == "mixed":  # half the problems as uniform sampling draws them
            by_count = rng.random(draw) < 0.5
            digits[by_count] = rng.choice(lengths, size=(int(by_count.sum()), num_operands), p=shares["by-count"])
        if lengths[-1] <= 18:
            lows = np.where((digits > 1) | nonzero, 10 ** (digits - 1), 0)
            rows = map(tuple, rng.integers(lows, 10 ** digits).tolist())
        else:
            rows = (tuple(low + exact.randrange(size) for low, size in map(operand_range, row, nonzero.tolist()))
                    for row in digits.tolist())
        tuples.update(dict.fromkeys(rows))
    return np.array(list(tuples)[:count], dtype=np.int64 if lengths[-1] <= 18 else object)


def operand_length_tuples(config, num_operands):
    """The combinations of operand lengths (digits) that the data holds."""
    lengths = range(config.min_digits, config.max_digits + 1)
    if config.sampling == "same-length":
        return [(length,) * num_operands for length in lengths]
    return list(itertools.product(lengths, repeat=num_operands))


def group_capacity(config, op, num_operands):
    """How many distinct problems of `op` with this many operands the config allows."""
    lengths = range(config.min_digits, config.max_digits + 1)
    if config.sampling == "same-length":
        return sum(math.prod(size for _, size in length_ranges(op, (length,) * num_operands)) for length in lengths)
    return math.prod(10 ** config.max_digits - operand_range(config.min_digits, position in op.nonzero_operands)[0]
                     for position in range(num_operands))


def generate_splits(config):
    """Distinct problems, balanced over operations (or in the shares of operation_weights), numbers of operands and
    (by default) operand lengths, shuffled into disjoint train/val/test lists (or all into test, with test_only)."""
    if config.sampling == "adderboard":  # verify.py's order, its repeated edge case once
        pairs = dict.fromkeys(protocol_pairs(config.seed, config.num_examples))
        return {"test": [Problem("+", pair).render(config.data_format, config.max_digits) for pair in pairs]}
    groups = [(op, num_operands) for op in config.operation_list for num_operands in range(2, config.max_operands + 1)]
    capacities = [group_capacity(config, op, num_operands) for op, num_operands in groups]
    num_examples = config.num_examples
    if num_examples > sum(capacities):
        log.warning(f"asked for {num_examples} examples but only {sum(capacities)} distinct problems exist with these "
                    f"settings; generating all of them (no problem is repeated)")
        num_examples = sum(capacities)

    if config.operation_weights is None:
        quotas = fill_quotas(num_examples, capacities)
    else:  # an operation's share is split evenly over its operand counts
        weights = [config.operation_weight(op.symbol) for op, _ in groups]
        quotas = weighted_quotas(num_examples, weights, capacities)
        given = Counter()
        for (op, _), quota in zip(groups, quotas):
            given[op.symbol] += quota
        left_out = [symbol for symbol in config.operators if not given[symbol]]
        if left_out:
            log.warning(f"--operation-weights leave {', '.join(left_out)} without a single problem")
    rng = np.random.default_rng(config.seed)
    problems = []
    for (op, num_operands), quota in zip(groups, quotas):
        operands = sample_group(op, num_operands, quota, config, rng)
        problems.extend(Problem(op.symbol, tuple(row)) for row in operands.tolist())
    order = rng.permutation(num_examples)
    examples = [problems[i].render(config.data_format, config.max_digits) for i in order.tolist()]
    if config.test_only:
        return {"test": examples}

    num_test = round(num_examples * config.test_fraction)
    num_val = round(num_examples * config.val_fraction)
    num_train = num_examples - num_val - num_test
    if min(num_train, num_val, num_test) <= 0:
        raise ConfigError(f"{num_examples} examples are too few for non-empty train/val/test splits")
    return {
        "train": examples[:num_train],
        "val": examples[num_train:num_train + num_val],
        "test": examples[num_train + num_val:],
    }


def summarize(examples, config):
    """Counts by operation, operand digit lengths and number of carries, for the generation log."""
    by_operation, by_digits, by_carries = Counter(), Counter(), Counter()
    for text in tqdm(examples, desc="summarizing", unit="problem", disable=progress_disabled(len(examples)),
                     leave=False):
        problem = parse_prompt(split_example(text)[0], config.data_format)
        by_operation[problem.operator] += 1
        by_digits[problem.digits_key] += 1
        by_carries[problem.operation.carries and problem.operation.carries.count(problem.operands)] += 1
    return {"num_examples": len(examples), "by_operation": dict(by_operation),
            "by_operand_digits": dict(sorted(by_digits.items(), key=lambda item: cell_sort_key(item[0]))),
            "by_carries": {str(k): v for k, v in sorted(by_carries.items(), key=lambda item: cell_sort_key(item[0]))}}
