"""Arithmetic datasets on disk and in memory: the JSON split files, and the tokenised dataset the trainer and the
evaluator read.

A problem is stored as its full text, "a+b=c<end>"; the prompt is everything up to the first "=", the answer the
rest. The data format (how numbers are written, formats.py) is chosen at generation and recorded in every file.
Every example read is checked against its problem, so a wrong answer is never trained on or scored against.
"""

import copy
import hashlib
import itertools
import json
import logging
import os
import shlex
import shutil
import time
import uuid
from dataclasses import asdict, fields

import numpy as np
import torch

from math_llm.data_generation import DataConfig, generate_splits, summarize
from math_llm.errors import ConfigError, DataError
from math_llm.files import atomic_open
from math_llm.flags import flag_name
from math_llm.formats import FORMATS, data_format
from math_llm.model import IGNORE_INDEX
from math_llm.operations import OPERATION_NAMES, operation
from math_llm.problems import Problem, final_answer, parse_prompt, prompt_operator, split_example, written_steps
from math_llm.tokenizer import DIGITS, Tokenizer, TokenizerError, vocab_for

SPLITS = ("train", "val", "test")
FORMAT_SAMPLE = 100  # the first examples of a file that another format must also fit to be named as its own
log = logging.getLogger(__name__)


def split_path(data_dir, split):
    return os.path.join(data_dir, f"{split}.json")


def write_split(path, examples, metadata):
    """One example per line, so an error in line N of the file points at a single example."""
    with atomic_open(path) as f:
        f.write('{"metadata": ' + json.dumps(metadata) + ',\n"examples": [\n')
        f.write(",\n".join(json.dumps(text) for text in examples))
        f.write("\n]}\n")


def write_splits(data_dir, splits, config):
    """Writes all the splits or none: into a new directory beside `data_dir`, moved into place once complete, so
    that a kill or an error mid-generation leaves no partial dataset behind."""
    target = os.path.abspath(data_dir)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    temp_dir = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.partial-{uuid.uuid4().hex[:12]}")
    os.mkdir(temp_dir)  # the permissions that os.makedirs gives (tempfile.mkdtemp's are private to the user)
    try:
        for split, examples in splits.items():
            write_split(split_path(temp_dir, split), examples, {"split": split, **asdict(config)})
        move_splits(temp_dir, target)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def move_splits(temp_dir, data_dir):
    """Moves the split files of `temp_dir` to `data_dir`: a missing `data_dir` by renaming the directory, at once;
    an existing one file by file, its old test split removed first and the new one moved last, so that a kill
    midway leaves some splits (which dataset_present refuses), never all of them partly old."""
    if not os.path.exists(data_dir):
        os.rename(temp_dir, data_dir)
        return
    if os.path.exists(split_path(data_dir, "test")):
        os.remove(split_path(data_dir, "test"))
    for name in sorted(os.listdir(temp_dir), key=lambda name: name == "test.json"):
        os.replace(os.path.join(temp_dir, name), os.path.join(data_dir, name))


def read_split(path):
    """(examples, metadata, raw file text). Accepts {"metadata": ..., "examples": [...]} or a bare list of strings
    (plain format, the seed's)."""
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
    try:
        data_format(metadata.get("format", "plain"))
        if isinstance(metadata.get("operations"), str):  # as written by generation (older files held a list)
            [operation(OPERATION_NAMES.get(name, name)) for name in metadata["operations"].split(",")]
    except ValueError as error:
        raise DataError(f"{path}: {error}") from None
    return examples, metadata, text


def read_metadata(path):
    """The metadata of a split file as write_split writes it (on its first line, so a large file is not parsed
    whole); {} for a file without it."""
    with open(path, encoding="utf-8") as f:
        first = f.readline().strip()
    prefix = '{"metadata": '
    if first.startswith(prefix) and first.endswith(","):
        try:
            metadata = json.loads(first[len(prefix):-1])
            return metadata if isinstance(metadata, dict) else {}
        except json.JSONDecodeError:
            pass
    return read_split(path)[1]


def line_of_example(file_text, examples, index):
    """Line number of examples[index] in the file, found by scanning for each quoted example in order."""
    position = 0
    for text in examples[: index + 1]:
        found = file_text.find(json.dumps(text), position)
        if found < 0:
            return None
        position = found + 1
    return file_text.count("\n", 0, position - 1) + 1


def load_splits(data_dir, tokenizer=None):
    """(datasets by split, tokenizer): tokenised with `tokenizer` (a resumed run's own) or else with the vocabulary
    that the data needs. All splits must share one format."""
    contents = {split: read_split(split_path(data_dir, split)) for split in SPLITS}
    if tokenizer is None:
        tokenizer = Tokenizer(vocab_for(text for examples, _, _ in contents.values() for text in examples
                                        if isinstance(text, str)))
    datasets = {split: ArithmeticDataset.from_file(split_path(data_dir, split), tokenizer, contents[split])
                for split in SPLITS}
    for split in ("val", "test"):
        if datasets[split].format != datasets["train"].format:
            raise DataError(f"{split_path(data_dir, split)}: format {datasets[split].format.name!r} differs from the "
                            f"training split's {datasets['train'].format.name!r}; regenerate the splits together")
    return datasets, tokenizer


def dataset_present(data_dir, splits=SPLITS):
    """Whether `data_dir` holds all of `splits` (False: none of them); some but not all is a DataError, so a partial
    dataset is never silently completed or replaced."""
    missing = [split for split in splits if not os.path.exists(split_path(data_dir, split))]
    if 0 < len(missing) < len(splits):
        raise DataError(f"{data_dir}: missing {', '.join(split_path(data_dir, s) for s in missing)}; delete the "
                        f"directory and generate all of {', '.join(splits)} again")
    return not missing


def check_resumed_data(run_dir, data_dir, data_config):
    """A resumed run must find the data it was trained on: one generated in its place would only be refused as
    changed. Its absence is a DataError saying how to get it back; `data_config`, the DataConfig fields that the
    run's checkpoint holds, gives the command that generates it again."""
    missing = [os.path.basename(split_path(data_dir, split)) for split in SPLITS
               if not os.path.exists(split_path(data_dir, split))]
    if missing:
        command = generation_command(data_config, data_dir)
        raise DataError(f"cannot resume {run_dir}: its data in {data_dir} is gone (no {', '.join(missing)}); move it "
                        f"back{f', or generate it again: {command}' if command else ''}")


def generation_command(data_config, data_dir):
    """The generate_data.py command that writes the data of `data_config` (DataConfig's fields, as data files
    record them) to `data_dir`, its flags those that differ from the defaults; None for data not recorded so (a
    hand-written file, or one of a version with other fields)."""
    if set(data_config) != {field.name for field in fields(DataConfig)}:
        return None
    words = ["python", "scripts/generate_data.py"]
    for field in fields(DataConfig):
        value = data_config[field.name]
        if value is True:
            words.append(flag_name(field))
        elif value != field.default:
            words += [f"{flag_name(field)}={value}"] if str(value).startswith("-") else [flag_name(field), str(value)]
    return shlex.join(words + ["--output-dir", str(data_dir)])


def ensure_dataset(data_dir, seed):
    """A missing dataset is generated with the defaults; a partial one is an error, never silently replaced."""
    if not dataset_present(data_dir):
        data_config = DataConfig(seed=seed)
        log.info(f"no dataset in {data_dir}/: generating the default one ({data_config})")
        write_dataset(data_dir, data_config)


def write_dataset(data_dir, config):
    """Generates the splits of `config` into `data_dir` (what generate_data.py does) and logs what they hold."""
    stale = [split_path(data_dir, split) for split in ("train", "val")
             if config.test_only and os.path.exists(split_path(data_dir, split))]
    if stale:  # a test-only file beside another dataset's training split could be trained on by mistake
        raise ConfigError(f"--test-only: {data_dir} already holds {' and '.join(stale)}; write the test file "
                          f"to a directory of its own")
    start = time.perf_counter()
    splits = generate_splits(config)
    write_splits(data_dir, splits, config)
    log.info(f"generated {sum(map(len, splits.values()))} distinct problems in {time.perf_counter() - start:.1f} s")
    for split, examples in splits.items():
        summary = summarize(examples, config)
        by_digits = summary["by_operand_digits"]
        by_digits = json.dumps(by_digits) if len(by_digits) <= 25 else f"{len(by_digits)} length combinations"
        log.info(f"{split_path(data_dir, split)}: {summary['num_examples']} problems | by operation "
                 f"{json.dumps(summary['by_operation'])} | by operand digits {by_digits} | by carries "
                 f"{json.dumps(summary['by_carries'])}")


# ---------------------------------------------------------------------------------------------------------------
# Dataset

class ArithmeticDataset:
    """Pre-tokenised problems as padded tensors; `batch(indices)` slices inputs and answer-only targets."""

    def __init__(self, examples, tokenizer, source="<memory>", file_text=None, metadata=None):
        """`metadata`: as generated (format, operations, max_digits, sampling...); none means the plain format."""
        self.source = source
        self.examples = examples
        self.metadata = metadata or {"format": "plain"}
        self.format = data_format(self.metadata.get("format", "plain"))
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
            except (ValueError, TokenizerError) as error:
                raise DataError(f"{self.location(index, file_text)}: {error}") from None
            self.prompts.append(prompt)
            self.answers.append(answer)
            encoded.append(ids)
        self.check_answers(file_text, format_stated="format" in (metadata or {}))

        equals_id = tokenizer.token_to_id["="]
        self.lengths = torch.tensor([len(ids) for ids in encoded])
        self.prompt_lengths = torch.tensor([ids.index(equals_id) + 1 for ids in encoded])
        longest = int(self.lengths.max())
        # Filled from one flat array: built from padded lists, the tensor of a million problems takes 8x as long
        positions = torch.arange(longest)
        flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int64, count=int(self.lengths.sum()))
        self.tokens = torch.full((len(encoded), longest), tokenizer.end_id)
        self.tokens[positions < self.lengths[:, None]] = torch.from_numpy(flat)
        # targets[i, j] is the token the model must predict at input position j-1; only answer tokens count.
        is_answer = (positions >= self.prompt_lengths[:, None]) & (positions < self.lengths[:, None])
        self.targets = torch.where(is_answer, self.tokens, IGNORE_INDEX)
        self.extra_targets = {}  # name: [examples, longest] per-token targets of an auxiliary loss, batched alike

    @classmethod
    def from_file(cls, path, tokenizer, contents=None):
        """`contents`: what read_split(path) returned, when the caller has read the file already."""
        examples, metadata, file_text = contents or read_split(path)
        return cls(examples, tokenizer, source=path, file_text=file_text, metadata=metadata)

    def __len__(self):
        return len(self.examples)

    def location(self, index, file_text=None):
        """Where example `index` comes from, for messages: 'data/test.json line 7' ('example 6' without a file).
        `file_text`: the file's text, when the caller holds it."""
        if file_text is None and os.path.isfile(self.source):
            with open(self.source, encoding="utf-8") as f:
                file_text = f.read()
        line = line_of_example(file_text, self.examples, index) if file_text else None
        return f"{self.source} line {line}" if line else f"{self.source} example {index}"

    def check_answers(self, file_text, format_stated):
        """Every answer, scratchpad steps included, must be what its problem gives in the dataset's format, and in
        the formats padded to one width every operand must have that width: a wrong answer is otherwise trained on,
        or scored against, without a word. The first wrong one is a DataError naming its line, or the format the
        file is written in where its metadata names another (`format_stated`: whether it names one at all)."""
        data_format, width = self.format, self.operand_width
        for index, (prompt, answer) in enumerate(zip(self.prompts, self.answers)):
            try:
                mistake = answer_mistake(prompt, answer, data_format, width)
                if mistake:
                    mistake = f"{self.examples[index]!r} {mistake}"
            except ValueError as error:  # no problem (a zero divisor), or none that the format can write
                mistake = str(error)
            if mistake:
                if written_in := self.written_format(index):
                    mistake = f"written in the {written_in.name!r} format, but " + (
                        f"its metadata says {data_format.name!r}" if format_stated else
                        f"a file whose metadata names no format is read as 'plain' (write it as "
                        f'{{"metadata": {{"format": "{written_in.name}"}}, "examples": [...]}})')
                raise DataError(f"{self.location(index, file_text)}: {mistake}")

    def written_format(self, index):
        """The format other than the dataset's in which example `index` and the first examples of the dataset are
        all right, or None: the one its text is likely written in."""
        sample = [index, *range(min(FORMAT_SAMPLE, len(self)))]
        for candidate in FORMATS.values():
            width = first_operand_digits(self.prompts[0]) if candidate.fixed_width else None
            if candidate != self.format and all(is_right(self.prompts[i], self.answers[i], candidate, width)
                                                for i in sample):
                return candidate
        return None

    def add_token_targets(self, name, values):
        """Adds per-token targets [examples, longest] of an auxiliary loss (NaN where there is none), aligned with the
        tokens: `batch` returns them under `name`, shifted as the targets are."""
        self.extra_targets[name] = values.to(self.tokens.device)

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
        subset.extra_targets = {name: values[device_rows] for name, values in self.extra_targets.items()}
        return subset

    def to(self, device):
        """Moves the token tensors to `device`; lengths stay on the CPU, where batches are cut without a device sync."""
        self.tokens, self.targets = self.tokens.to(device), self.targets.to(device)
        self.extra_targets = {name: values.to(device) for name, values in self.extra_targets.items()}
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
        """Digits per operand in the formats padded to one width (the model learned that width), None in others."""
        return first_operand_digits(self.prompts[0]) if self.format.fixed_width else None

    def batch(self, indices, device_indices=None):
        """(inputs, targets, extra targets), each [batch, longest-in-batch - 1]: padding only to the longest sequence
        here; the extra targets ({name: tensor}, see add_token_targets) are aligned with the targets. `indices` are
        on the CPU; `device_indices`, the same already on the tensors' device, spare a CUDA run the blocking copy of
        the index that each batch would otherwise cost."""
        longest = int(self.lengths[indices].max())
        rows = indices if device_indices is None else device_indices
        extra = {name: values[rows, 1:longest] for name, values in self.extra_targets.items()}
        return self.tokens[rows, : longest - 1], self.targets[rows, 1:longest], extra


def first_operand_digits(prompt):
    """The digits before the first operator."""
    return len(prompt) - len(prompt.lstrip(DIGITS))


def answer_mistake(prompt, answer, data_format, width=None):
    """What is wrong with `answer` to `prompt` in `data_format` (whose operands have `width` digits in the formats
    padded to one width), or None; a ValueError for a prompt that is no problem, or none the format can write. The
    prompt is split without parse_prompt's pattern, which prompt_operator has matched already: a training split may
    hold a million problems."""
    operator = prompt[first_operand_digits(prompt)]
    texts = prompt[:-1].split(operator)
    if width and any(len(text) != width for text in texts):
        return (f"has operands of {' and '.join(str(len(text)) for text in texts)} digits, but the "
                f"{data_format.name!r} format pads all operands of a file to one width, here {width} (its first's)")
    problem = Problem(operator, tuple(int(text[::-1] if data_format.reverse_operands else text) for text in texts))
    expected = problem.answer_text(data_format, width)
    if answer == expected:
        return None
    if final_answer(answer) != final_answer(expected):
        return f"states the answer {final_answer(answer)}, but {prompt[:-1]} = {final_answer(expected)}"
    steps = itertools.zip_longest(written_steps(answer), written_steps(expected), fillvalue="")
    for number, (written, right) in enumerate(steps, 1):
        if written != right:
            return f"writes step {number} of its scratchpad as {written!r}, but {prompt[:-1]} takes {right!r}"
    return f"writes the answer {answer!r}, but {prompt[:-1]} = {expected!r}"  # the same steps, laid out otherwise


def is_right(prompt, answer, data_format, width=None):
    """Whether `answer` is right in `data_format`, for guessing the format of a file: any failure is a no."""
    try:
        return answer_mistake(prompt, answer, data_format, width) is None
    except ValueError:
        return False
