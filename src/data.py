"""Arithmetic problems: generation of disjoint splits, the JSON files that hold them, and the tokenised dataset.

A problem is stored as its full text, "a+b=c<end>"; the prompt is everything up to "=", the answer the rest.
The data format (how numbers are written, FORMATS) is chosen at generation and recorded in every file.
"""

import copy
import hashlib
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from src.errors import ConfigError, DataError
from src.files import atomic_open
from src.tokenizer import END_TOKEN, TokenizerError

IGNORE_INDEX = -100  # targets the loss skips: prompt tokens and padding
MAX_SUPPORTED_DIGITS = 18  # operands are sampled as int64
SPLITS = ("train", "val", "test")
FORMATS = {  # name: what 12 + 7 looks like with --max-digits 2
    "plain": "12+7=19 (the seed's format)",
    "reversed": "12+7=91 (answer digits least significant first, the order in which carries are computed)",
    "padded": "12+07=019 (operands zero-padded to --max-digits, the answer to one digit more)",
    "padded-reversed": "12+07=910 (padded and reversed, as minGPT's adder)",
}


@dataclass
class DataConfig:
    num_examples: int = 10_000
    max_digits: int = 2
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 42
    format: str = "plain"

    def __post_init__(self):
        if self.num_examples < 3:
            raise ConfigError(f"--num-examples must be at least 3 (one per split), got {self.num_examples}")
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise ConfigError(f"--val-fraction and --test-fraction must be in (0, 1) and leave room for training, "
                              f"got {self.val_fraction} and {self.test_fraction}")
        if not 1 <= self.max_digits <= MAX_SUPPORTED_DIGITS:
            raise ConfigError(f"--max-digits must be between 1 and {MAX_SUPPORTED_DIGITS}, got {self.max_digits}")
        if self.format not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")


# ---------------------------------------------------------------------------------------------------------------
# Pure functions on single problems

def format_problem(a, b, data_format="plain", width=None):
    """The problem's text in `data_format`; padded formats write operands with `width` digits (default: as many as
    the longer operand has)."""
    if data_format.startswith("padded"):
        width = width or len(str(max(a, b)))
        a_text, b_text, answer = f"{a:0{width}d}", f"{b:0{width}d}", f"{a + b:0{width + 1}d}"
    else:
        a_text, b_text, answer = str(a), str(b), str(a + b)
    if data_format.endswith("reversed"):
        answer = answer[::-1]
    return f"{a_text}+{b_text}={answer}{END_TOKEN}"


def split_example(text):
    """'12+34=46<end>' -> ('12+34=', '46'): the prompt the model sees and the answer it must write."""
    prompt, equals, rest = text.partition("=")
    if not equals or not rest.endswith(END_TOKEN):
        raise ValueError(f"expected 'a+b=c{END_TOKEN}', got {text!r}")
    return prompt + "=", rest[: -len(END_TOKEN)]


def operand_digits(prompt):
    """'12+345=' -> (2, 3): the digits of each operand's value, so '07' (padded) counts as 1."""
    return tuple(len(operand.lstrip("0") or "0") for operand in prompt.rstrip("=").split("+"))


def num_carries(a, b):
    carries = carry = 0
    while a or b:
        carry = int(a % 10 + b % 10 + carry >= 10)
        carries += carry
        a, b = a // 10, b // 10
    return carries


def count_with_digits(num_digits):
    """How many integers have exactly this many digits (0 counts as a 1-digit number)."""
    return 10 if num_digits == 1 else 9 * 10 ** (num_digits - 1)


def smallest_with_digits(num_digits):
    return 0 if num_digits == 1 else 10 ** (num_digits - 1)


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


def sample_distinct_pairs(digits_a, digits_b, count, rng):
    """`count` distinct (a, b) with exactly these digit counts, uniformly without replacement."""
    size_a, size_b = count_with_digits(digits_a), count_with_digits(digits_b)
    low_a, low_b = smallest_with_digits(digits_a), smallest_with_digits(digits_b)
    space = size_a * size_b
    if space <= 2_000_000 or 2 * count >= space:
        flat = rng.choice(space, size=count, replace=False)
        return low_a + flat // size_b, low_b + flat % size_b
    pairs = np.empty((0, 2), dtype=np.int64)
    while len(pairs) < count:  # rejection sampling; the space is at least twice as large as `count`
        draw = int((count - len(pairs)) * 1.1) + 16
        fresh = np.stack([rng.integers(low_a, low_a + size_a, draw), rng.integers(low_b, low_b + size_b, draw)], 1)
        pairs = np.concatenate([pairs, fresh])
        _, first = np.unique(pairs, axis=0, return_index=True)
        pairs = pairs[np.sort(first)]
    return pairs[:count, 0], pairs[:count, 1]


def distinct_problem_count(max_digits):
    return (10 ** max_digits) ** 2


def generate_splits(config, log=None):
    """Distinct problems, balanced over (digits of a, digits of b), shuffled into disjoint train/val/test lists."""
    available = distinct_problem_count(config.max_digits)
    num_examples = config.num_examples
    if num_examples > available:
        if log:
            log.warning(
                f"asked for {num_examples} examples but only {available} distinct problems exist with "
                f"--max-digits {config.max_digits}; generating all {available} (no problem is repeated)"
            )
        num_examples = available
    length_pairs = [(la, lb) for la in range(1, config.max_digits + 1) for lb in range(1, config.max_digits + 1)]
    capacities = [count_with_digits(la) * count_with_digits(lb) for la, lb in length_pairs]
    quotas = fill_quotas(num_examples, capacities)

    rng = np.random.default_rng(config.seed)
    operands_a, operands_b = [], []
    for (digits_a, digits_b), quota in tqdm(list(zip(length_pairs, quotas)), desc="sampling", unit="length pair",
                                            disable=num_examples < 200_000, leave=False):
        a, b = sample_distinct_pairs(digits_a, digits_b, quota, rng)
        operands_a.append(a)
        operands_b.append(b)
    operands_a, operands_b = np.concatenate(operands_a), np.concatenate(operands_b)
    order = rng.permutation(num_examples)
    examples = [format_problem(a, b, config.format, config.max_digits)
                for a, b in zip(operands_a[order].tolist(), operands_b[order].tolist())]

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


def summarize(examples):
    """Counts by operand digit lengths and by number of carries, for the generation log."""
    by_digits, by_carries = Counter(), Counter()
    for text in tqdm(examples, desc="summarizing", unit="problem", disable=len(examples) < 200_000, leave=False):
        prompt, _ = split_example(text)
        a, b = (int(x) for x in prompt.rstrip("=").split("+"))
        by_digits["x".join(map(str, operand_digits(prompt)))] += 1
        by_carries[num_carries(a, b)] += 1
    return {"num_examples": len(examples), "by_operand_digits": dict(sorted(by_digits.items())),
            "by_carries": dict(sorted(by_carries.items()))}


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
                    {"split": split, "operations": ["+"], **asdict(config)})


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


# ---------------------------------------------------------------------------------------------------------------
# Dataset

class ArithmeticDataset:
    """Pre-tokenised problems as padded tensors; `batch(indices)` slices inputs and answer-only targets."""

    def __init__(self, examples, tokenizer, max_length, source="<memory>", file_text=None, data_format="plain"):
        self.source = source
        self.examples = examples
        self.format = data_format
        self.prompts, self.answers = [], []
        encoded = []
        for index, text in enumerate(examples):
            try:
                if not isinstance(text, str):
                    raise ValueError(f"expected a string, got {type(text).__name__} {text!r}")
                prompt, answer = split_example(text)
                ids = tokenizer.encode(text)
                if len(ids) > max_length:
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

    @classmethod
    def from_file(cls, path, tokenizer, max_length):
        examples, metadata, file_text = read_split(path)
        return cls(examples, tokenizer, max_length, source=path, file_text=file_text,
                   data_format=metadata.get("format", "plain"))

    def __len__(self):
        return len(self.examples)

    def subset(self, indices):
        """The problems at `indices` (a range or list), as a dataset of their own: e.g. one rank's shard of a split."""
        subset = copy.copy(self)
        rows = torch.as_tensor(list(indices), dtype=torch.long)
        subset.examples = [self.examples[i] for i in rows.tolist()]
        subset.prompts = [self.prompts[i] for i in rows.tolist()]
        subset.answers = [self.answers[i] for i in rows.tolist()]
        subset.lengths, subset.prompt_lengths = self.lengths[rows], self.prompt_lengths[rows]
        device_rows = rows.to(self.tokens.device)
        subset.tokens, subset.targets = self.tokens[device_rows], self.targets[device_rows]
        return subset

    def to(self, device):
        """Moves the token tensors to `device`; lengths stay on the CPU, where batches are cut without a device sync."""
        self.tokens, self.targets = self.tokens.to(device), self.targets.to(device)
        return self

    def fingerprint(self):
        """Identifies the exact examples and their order, so a resumed run can tell that its data changed."""
        return hashlib.sha256("\n".join(self.examples).encode()).hexdigest()[:16]

    @property
    def operand_width(self):
        """Digits per operand in the padded formats (the model learned that width), None in the others."""
        if not self.format.startswith("padded"):
            return None
        return len(self.prompts[0].split("+")[0])

    def batch(self, indices, device_indices=None):
        """(inputs, targets), both [batch, longest-in-batch - 1]: padding only to the longest sequence here.
        `indices` are on the CPU; `device_indices`, the same already on the tensors' device, spare a CUDA run the
        blocking copy of the index that each batch would otherwise cost."""
        longest = int(self.lengths[indices].max())
        rows = indices if device_indices is None else device_indices
        return self.tokens[rows, : longest - 1], self.targets[rows, 1:longest]
