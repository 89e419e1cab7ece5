"""Arithmetic datasets: generation of disjoint splits, the JSON files that hold them, and the tokenised dataset.

A problem is stored as its full text, "a+b=c<end>"; the prompt is everything up to the first "=", the answer the
rest. The data format (how numbers are written, problems.FORMATS) is chosen at generation and recorded in every file.
"""

import copy
import hashlib
import itertools
import json
import math
import os
import random
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from src.errors import ConfigError, DataError
from src.files import atomic_open
from src.problems import (FORMATS, OPERATION_NAMES, OPERATIONS, SCRATCHPAD_LIMITS, Problem, cell_sort_key,
                          is_padded, is_scratchpad, multiplication_running_sums, num_carries,
                          operand_count_for_digits, parse_prompt, prompt_operator, smallest_with_digits,
                          split_example, written_places)
from src.tokenizer import Tokenizer, TokenizerError, vocab_for

IGNORE_INDEX = -100  # targets the loss skips: prompt tokens and padding
MAX_SUPPORTED_DIGITS = 1000  # far below Python's 4300-digit limit on int <-> str; products have twice as many
INT64_MAX = 2 ** 63 - 1  # operands up to this are sampled with numpy, longer ones as Python ints
SPLITS = ("train", "val", "test")
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
}


@dataclass
class DataConfig:
    num_examples: int = 10_000
    max_digits: int = 2
    min_digits: int = 1
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 42
    format: str = "plain"
    operations: str = "+"  # comma-separated subset of OPERATIONS, mixed in one dataset
    operation_weights: str = None  # comma-separated relative shares of the operations, in their order (None: equal)
    max_operands: int = 2
    sampling: str = "balanced"
    test_only: bool = False  # all problems go to test.json: a test set for a model trained on other data

    def __post_init__(self):
        self.operations = ",".join(OPERATION_NAMES.get(name, name) for name in self.operations.split(","))
        if self.num_examples < 3:
            raise ConfigError(f"--num-examples must be at least 3 (one per split), got {self.num_examples}")
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise ConfigError(f"--val-fraction and --test-fraction must be in (0, 1) and leave room for training, "
                              f"got {self.val_fraction} and {self.test_fraction}")
        if not 1 <= self.max_digits <= MAX_SUPPORTED_DIGITS:
            raise ConfigError(f"--max-digits must be between 1 and {MAX_SUPPORTED_DIGITS}, got {self.max_digits}")
        if not 1 <= self.min_digits <= self.max_digits:
            raise ConfigError(f"--min-digits must be between 1 and --max-digits ({self.max_digits}), "
                              f"got {self.min_digits}")
        if self.format not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
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
        if self.sampling not in SAMPLINGS:
            raise ConfigError(f"--sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")
        if self.sampling == "carry-balanced" and (self.max_operands > 2 or "*" in operators):
            raise ConfigError("--sampling carry-balanced counts the carries of + and the borrows of - with two "
                              "operands; drop * from --operations and use --max-operands 2")
        if is_scratchpad(self.format):
            for operator in operators:
                limit = SCRATCHPAD_LIMITS[operator]
                if limit is not None and self.max_operands > limit:
                    raise ConfigError(f"the scratchpad format writes steps for {operator} with at most {limit} "
                                      f"operands; use --max-operands {limit}")

    @property
    def operators(self):
        return tuple(self.operations.split(","))

    def operation_weight(self, operator):
        if self.operation_weights is None:
            return 1.0
        return float(self.operation_weights.split(",")[self.operators.index(operator)])


# ---------------------------------------------------------------------------------------------------------------
# Generation

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


def digit_ranges(lengths):
    return [(smallest_with_digits(length), operand_count_for_digits(length)) for length in lengths]


def sample_carry_balanced(operator, lengths, count, rng):
    """`count` distinct pairs with these digit counts whose number of carries (borrows), as `num_carries` counts
    them, is uniform over what the length pair allows; subtraction gives a negative result half the time when the
    lengths are equal (and always when a is shorter)."""
    longer, shorter = max(lengths), min(lengths)
    pairs = {}  # distinct, in the order drawn
    for _ in range(50 * count + 1000 if count else 0):
        carrying = sample_carry_columns(operator, longer, shorter, rng)
        larger, smaller = carry_pattern_pair(operator, longer, shorter, carrying, rng)
        a_first = lengths[0] > lengths[1] or (lengths[0] == lengths[1] and (operator == "+" or rng.random() < 0.5))
        pairs[(larger, smaller) if a_first else (smaller, larger)] = None
        if len(pairs) == count:
            break
    if len(pairs) == count:
        return np.array(list(pairs), dtype=object).reshape(-1, 2)  # Python ints: any length
    raise ConfigError(f"--sampling carry-balanced found only {len(pairs)} distinct {operator} problems with "
                      f"{lengths[0]}x{lengths[1]} digits where {count} were needed; ask for fewer --num-examples")


def sample_carry_columns(operator, longer, shorter, rng):
    """The columns (least significant first) that pass a carry (borrow) on: first their number, uniform over what
    is possible, then a set of that size, uniform over the possible ones. Columns the shorter operand shares can
    carry independently; past it a carry continues only as a chain from the last shared column (a 9 plus a carry,
    a 0 minus a borrow). The larger operand's top column never borrows."""
    shared = shorter - (operator == "-" and longer == shorter)
    beyond = longer - shorter - (operator == "-" and longer > shorter)
    number = int(rng.integers(0, shared + beyond + 1))
    # ways[t]: sets with a chain of t columns past the shared ones (t > 0 needs the last shared column to carry)
    ways = [math.comb(shared, number)] + [math.comb(shared - 1, number - t - 1) if number - t - 1 >= 0 else 0
                                          for t in range(1, beyond + 1)]
    chain = int(rng.choice(len(ways), p=np.array(ways) / sum(ways)))
    if chain == 0:
        return set(rng.choice(shared, size=number, replace=False).tolist())
    inside = rng.choice(shared - 1, size=number - chain - 1, replace=False).tolist()
    return {*inside, shorter - 1, *range(shorter, shorter + chain)}


def carry_pattern_pair(operator, longer, shorter, carrying, rng):
    """(larger, smaller) operands with these digit counts in which column i passes a carry (borrow) on exactly
    when i is in `carrying` (a set from sample_carry_columns); the digits are uniform among those that do."""
    digits = [[], []]
    carry = 0
    for column in range(longer):
        top = [column == longer - 1 and longer > 1, column == shorter - 1 and shorter > 1]  # no leading zeros
        pairs = [(x, y) for x in range(1 if top[0] else 0, 10)
                 for y in (range(1 if top[1] else 0, 10) if column < shorter else [0])]
        if operator == "+":
            options = [(x, y) for x, y in pairs if (x + y + carry >= 10) == (column in carrying)]
        else:
            options = [(x, y) for x, y in pairs if (x - y - carry < 0) == (column in carrying)]
        x, y = options[rng.integers(len(options))]
        digits[0].append(x)
        if column < shorter:
            digits[1].append(y)
        carry = int(column in carrying)
    return tuple(int("".join(map(str, reversed(side)))) for side in digits)


def sample_group(operator, num_operands, count, config, rng):
    """`count` distinct operand tuples for one (operation, number of operands) group of the dataset."""
    if config.sampling == "uniform":
        low = smallest_with_digits(config.min_digits)
        return sample_distinct_tuples([(low, 10 ** config.max_digits - low)] * num_operands, count, rng)
    length_tuples = operand_length_tuples(config, num_operands)
    capacities = [math.prod(operand_count_for_digits(length) for length in lengths) for lengths in length_tuples]
    if config.sampling == "mixed":  # half balanced (equal weights), half uniform (weights ~ how many problems exist)
        weights = [0.5 / len(capacities) + 0.5 * capacity / sum(capacities) for capacity in capacities]
        quotas = weighted_quotas(count, weights, capacities)
    elif config.sampling == "length-weighted":
        quotas = weighted_quotas(count, [math.prod(lengths) for lengths in length_tuples], capacities)
    else:
        quotas = fill_quotas(count, capacities)
    parts = []
    for lengths, quota in tqdm(list(zip(length_tuples, quotas)), desc=f"sampling {operator}",
                               unit="length tuple", disable=count < 200_000, leave=False):
        if config.sampling == "carry-balanced":
            parts.append(sample_carry_balanced(operator, lengths, quota, rng))
        else:
            parts.append(sample_distinct_tuples(digit_ranges(lengths), quota, rng))
    return np.concatenate(parts)


def operand_length_tuples(config, num_operands):
    """The combinations of operand lengths (digits) that the data holds."""
    lengths = range(config.min_digits, config.max_digits + 1)
    if config.sampling == "same-length":
        return [(length,) * num_operands for length in lengths]
    return list(itertools.product(lengths, repeat=num_operands))


def group_capacity(config, num_operands):
    """How many distinct problems with this many operands the config allows."""
    if config.sampling == "same-length":
        return sum(operand_count_for_digits(length) ** num_operands
                   for length in range(config.min_digits, config.max_digits + 1))
    return (10 ** config.max_digits - smallest_with_digits(config.min_digits)) ** num_operands


def generate_splits(config, log=None):
    """Distinct problems, balanced over operations (or in the shares of operation_weights), numbers of operands and
    (by default) operand lengths, shuffled into disjoint train/val/test lists (or all into test, with test_only)."""
    groups = [(operator, num_operands) for operator in config.operators
              for num_operands in range(2, config.max_operands + 1)]
    capacities = [group_capacity(config, num_operands) for _, num_operands in groups]
    num_examples = config.num_examples
    if num_examples > sum(capacities):
        if log:
            log.warning(f"asked for {num_examples} examples but only {sum(capacities)} distinct problems exist with "
                        f"these settings; generating all of them (no problem is repeated)")
        num_examples = sum(capacities)

    if config.operation_weights is None:
        quotas = fill_quotas(num_examples, capacities)
    else:  # an operation's share is split evenly over its operand counts
        weights = [config.operation_weight(operator) for operator, _ in groups]
        quotas = weighted_quotas(num_examples, weights, capacities)
        given = Counter()
        for (operator, _), quota in zip(groups, quotas):
            given[operator] += quota
        left_out = [operator for operator in config.operators if not given[operator]]
        if left_out and log:
            log.warning(f"--operation-weights leave {', '.join(left_out)} without a single problem")
    rng = np.random.default_rng(config.seed)
    problems = []
    for (operator, num_operands), quota in zip(groups, quotas):
        operands = sample_group(operator, num_operands, quota, config, rng)
        problems.extend(Problem(operator, tuple(row)) for row in operands.tolist())
    order = rng.permutation(num_examples)
    examples = [problems[i].render(config.format, config.max_digits) for i in order.tolist()]
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


def summarize(examples, data_format):
    """Counts by operation, operand digit lengths and number of carries, for the generation log."""
    by_operation, by_digits, by_carries = Counter(), Counter(), Counter()
    for text in tqdm(examples, desc="summarizing", unit="problem", disable=len(examples) < 200_000, leave=False):
        problem = parse_prompt(split_example(text)[0], data_format)
        by_operation[problem.operator] += 1
        by_digits[problem.digits_key] += 1
        by_carries[num_carries(problem)] += 1
    return {"num_examples": len(examples), "by_operation": dict(by_operation),
            "by_operand_digits": dict(sorted(by_digits.items(), key=lambda item: cell_sort_key(item[0]))),
            "by_carries": {str(k): v for k, v in sorted(by_carries.items(), key=lambda item: cell_sort_key(item[0]))}}


# ---------------------------------------------------------------------------------------------------------------
# JSON files

def split_path(data_dir, split):
    return os.path.join(data_dir, f"{split}.json")


def write_split(path, examples, metadata):
    """One example per line, so an error in line N of the file points at a single example."""
    with atomic_open(path) as f:
        f.write('{"metadata": ' + json.dumps(metadata) + ',\n"examples": [\n')
        f.write(",\n".join(json.dumps(text) for text in examples))
        f.write("\n]}\n")


def write_splits(data_dir, splits, config):
    os.makedirs(data_dir, exist_ok=True)
    for split, examples in splits.items():
        write_split(split_path(data_dir, split), examples,
                    {"split": split, **asdict(config)})


def read_split(path):
    """(examples, metadata, raw file text). Accepts {"metadata": ..., "examples": [...]} or a bare list of strings
    (plain format)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (generate data with scripts/generate_data.py)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read it as UTF-8 text ({error})") from None
    try:
        content = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path} line {error.lineno} column {error.colno}: malformed JSON ({error.msg})") from None
    examples = content.get("examples") if isinstance(content, dict) else content
    if not isinstance(examples, list) or not examples:
        raise DataError(f"{path}: expected a non-empty list of examples, or an object with one under \"examples\"")
    metadata = content.get("metadata") if isinstance(content, dict) else None
    metadata = metadata if isinstance(metadata, dict) else {}
    data_format = metadata.get("format", "plain")
    if not isinstance(data_format, str) or data_format not in FORMATS:
        raise DataError(f"{path}: unknown data format {data_format!r} (known: {', '.join(FORMATS)})")
    return examples, metadata, text


def line_of_example(file_text, examples, index):
    """Line number of examples[index] in the file, found by scanning for each quoted example in order."""
    position = 0
    for text in examples[: index + 1]:
        found = file_text.find(json.dumps(text), position)
        if found < 0:
            return None
        position = found + 1
    return file_text.count("\n", 0, position - 1) + 1


def load_splits(data_dir, max_length, tokenizer=None):
    """(datasets by split, tokenizer): tokenised with `tokenizer` (a resumed run's own) or else with the vocabulary
    that the data needs. All splits must share one format."""
    contents = {split: read_split(split_path(data_dir, split)) for split in SPLITS}
    if tokenizer is None:
        tokenizer = Tokenizer(vocab_for(text for examples, _, _ in contents.values() for text in examples
                                        if isinstance(text, str)))
    datasets = {split: ArithmeticDataset.from_file(split_path(data_dir, split), tokenizer, max_length, contents[split])
                for split in SPLITS}
    for split in ("val", "test"):
        if datasets[split].format != datasets["train"].format:
            raise DataError(f"{split_path(data_dir, split)}: format {datasets[split].format!r} differs from the "
                            f"training split's {datasets['train'].format!r}; regenerate the splits together")
    return datasets, tokenizer


# ---------------------------------------------------------------------------------------------------------------
# Dataset

class ArithmeticDataset:
    """Pre-tokenised problems as padded tensors; `batch(indices)` slices inputs and answer-only targets."""

    def __init__(self, examples, tokenizer, max_length, source="<memory>", file_text=None, data_format="plain",
                 metadata=None):
        """`max_length`: the most tokens an example may have (None: no limit, for models without one)."""
        self.source = source
        self.examples = examples
        self.format = data_format
        self.metadata = metadata or {"format": data_format}  # as generated: operations, max_digits, sampling...
        self.prompts, self.answers = [], []
        self._problems = None  # parsed on first use (evaluation), not for the millions of a training split
        encoded = []
        for index, text in enumerate(examples):
            try:
                if not isinstance(text, str):
                    raise ValueError(f"expected a string, got {type(text).__name__} {text!r}")
                prompt, answer = split_example(text)
                prompt_operator(prompt)  # raises on a prompt that is not a problem
                ids = tokenizer.encode(text)
                if max_length is not None and len(ids) > max_length:
                    raise ValueError(f"{text!r} has {len(ids)} tokens, more than the max_length of {max_length} "
                                     f"(train.py --max-length)")
            except (ValueError, TokenizerError) as error:
                line = line_of_example(file_text, examples, index) if file_text else None
                where = f"line {line}" if line else f"example {index}"
                raise DataError(f"{source} {where}: {error}") from None
            self.prompts.append(prompt)
            self.answers.append(answer)
            encoded.append(ids)

        equals_id = tokenizer.token_to_id["="]
        self.lengths = torch.tensor([len(ids) for ids in encoded])
        self.prompt_lengths = torch.tensor([ids.index(equals_id) + 1 for ids in encoded])
        longest = int(self.lengths.max())
        self.tokens = torch.tensor([ids + [tokenizer.end_id] * (longest - len(ids)) for ids in encoded])
        # targets[i, j] is the token the model must predict at input position j-1; only answer tokens count.
        positions = torch.arange(longest)
        is_answer = (positions >= self.prompt_lengths[:, None]) & (positions < self.lengths[:, None])
        self.targets = torch.where(is_answer, self.tokens, IGNORE_INDEX)
        self.running_sums = None  # targets of the running-sum probe, from add_running_sums

    def add_running_sums(self):
        """Adds the targets of the running-sum probe (train.py --running-sum-loss): at each answer digit of a
        two-operand multiplication, the column total whose last digit it is (problems.multiplication_running_sums);
        NaN at every other position; none at all (running_sums stays None) where no problem has them. Returns how
        many problems have them."""
        if is_scratchpad(self.format):
            raise ConfigError(f"{self.source}: the running-sum loss reads answers written without a scratchpad, "
                              f"and this data has the {self.format!r} format")
        running_sums = torch.full(self.tokens.shape, math.nan)
        count = 0
        for row, (prompt, answer) in enumerate(zip(self.prompts, self.answers)):
            problem = parse_prompt(prompt, self.format)
            if problem.operator != "*" or len(problem.operands) != 2:
                continue
            totals = multiplication_running_sums(*problem.operands, len(answer))
            places = written_places(len(answer), self.format)
            start = int(self.prompt_lengths[row])  # a digit is one token
            running_sums[row, start:start + len(answer)] = torch.tensor([totals[place] for place in places],
                                                                         dtype=torch.float)
            count += 1
        if count:
            self.running_sums = running_sums.to(self.tokens.device)
        return count

    @classmethod
    def from_file(cls, path, tokenizer, max_length, contents=None):
        """`contents`: what read_split(path) returned, when the caller has read the file already."""
        examples, metadata, file_text = contents or read_split(path)
        return cls(examples, tokenizer, max_length, source=path, file_text=file_text,
                   data_format=metadata.get("format", "plain"), metadata=metadata)

    def __len__(self):
        return len(self.examples)

    def subset(self, indices):
        """The problems at `indices` (a range or list), as a dataset of their own: e.g. one rank's shard of a split."""
        subset = copy.copy(self)
        rows = torch.as_tensor(list(indices), dtype=torch.long)
        subset.examples = [self.examples[i] for i in rows.tolist()]
        subset.prompts = [self.prompts[i] for i in rows.tolist()]
        subset.answers = [self.answers[i] for i in rows.tolist()]
        subset._problems = None if self._problems is None else [self._problems[i] for i in rows.tolist()]
        subset.lengths, subset.prompt_lengths = self.lengths[rows], self.prompt_lengths[rows]
        device_rows = rows.to(self.tokens.device)
        subset.tokens, subset.targets = self.tokens[device_rows], self.targets[device_rows]
        subset.running_sums = None if self.running_sums is None else self.running_sums[device_rows]
        return subset

    def to(self, device):
        """Moves the token tensors to `device`; lengths stay on the CPU, where batches are cut without a device sync."""
        self.tokens, self.targets = self.tokens.to(device), self.targets.to(device)
        if self.running_sums is not None:
            self.running_sums = self.running_sums.to(device)
        return self

    @property
    def problems(self):
        """Each example as a Problem (operator and operand values), in order."""
        if self._problems is None:
            self._problems = [parse_prompt(prompt, self.format) for prompt in self.prompts]
        return self._problems

    def fingerprint(self):
        """Identifies the exact examples and their order, so a resumed run can tell that its data changed."""
        return hashlib.sha256("\n".join(self.examples).encode()).hexdigest()[:16]

    @property
    def operand_width(self):
        """Digits per operand in the padded formats (the model learned that width), None in the others."""
        if not is_padded(self.format):
            return None
        first = self.prompts[0]
        return len(first) - len(first.lstrip("0123456789"))  # the digits before the first operator

    def batch(self, indices, device_indices=None):
        """(inputs, targets, running sums), each [batch, longest-in-batch - 1]: padding only to the longest sequence
        here; the running sums, aligned with the targets, are None unless add_running_sums gave the dataset some.
        `indices` are on the CPU; `device_indices`, the same already on the tensors' device, spare a CUDA run the
        blocking copy of the index that each batch would otherwise cost."""
        longest = int(self.lengths[indices].max())
        rows = indices if device_indices is None else device_indices
        running_sums = None if self.running_sums is None else self.running_sums[rows, 1:longest]
        return self.tokens[rows, : longest - 1], self.targets[rows, 1:longest], running_sums
