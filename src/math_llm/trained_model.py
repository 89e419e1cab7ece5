"""A model with what it takes to feed it: its tokenizer, the data format and operand width it learned, the data
config it was trained on, and its running-sum probe if it has one; the one check that a dataset, or a typed
prompt, is something it can read; and for a problem a person types, its prompt in the model's format and where it
lies outside the training data. train.py, evaluate.py and interactive.py all go through it.
"""

import logging
from dataclasses import dataclass

import torch

from math_llm.errors import DataError
from math_llm.formats import DataFormat
from math_llm.model import Transformer
from math_llm.operations import OPERATION_NAMES
from math_llm.problems import parse_prompt
from math_llm.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    model: Transformer
    tokenizer: Tokenizer  # its own vocabulary
    data_format: DataFormat  # the format it learned
    operand_width: int | None  # the width its operands were padded to (formats padded to one width), else None
    data_config: dict  # how its training data was generated (DataConfig's fields)
    probe: torch.nn.Module | None = None  # its RunningSumProbe, if it was trained with one
    source: str = "this run"  # where it was loaded from, for messages
    step: int | None = None  # the training step of its weights
    data_dir: str | None = None  # the directory of the data it was trained on, as its run recorded it

    def description(self):
        """What a checkpoint records of it besides the weights and configs (checkpoint.load_model reads it back)."""
        return {"vocab": self.tokenizer.vocab, "data_format": self.data_format.name,
                "operand_width": self.operand_width, "data_config": self.data_config}

    @property
    def trained_lengths(self):
        """[fewest, most] digits of the operands it was trained on (None where the data config does not say)."""
        if "max_digits" not in self.data_config:
            return None
        return [self.data_config.get("min_digits", 1), self.data_config["max_digits"]]

    @property
    def trained_operators(self):
        """The operators of its training data, ('+', '-'), None where the data config does not say; older data
        configs list them, or name them (add, sub)."""
        operations = self.data_config.get("operations")
        if operations is None:
            return None
        names = operations.split(",") if isinstance(operations, str) else operations
        return tuple(OPERATION_NAMES.get(name, name) for name in names)

    def prompt_for(self, problem):
        """`problem`'s prompt in this model's format: 12+7 -> '21+70=' in the padded-reversed-all format at width 2;
        a ValueError where an operand has more digits than the width it learned (no padding fits it)."""
        width = self.operand_width
        if self.data_format.fixed_width and width and max(problem.operand_digits) > width:
            longest = max(problem.operands)
            raise ValueError(f"this model reads operands of at most {width} digits, zero-padded to {width}, and "
                             f"{longest} has {len(str(longest))}")
        return problem.prompt_text(self.data_format, width)

    def outside_training(self, problem):
        """What of `problem` its training data never had, one phrase each: the operation, more operands, operands
        of other lengths. Empty if none (or the data config does not say)."""
        reasons = []
        if self.trained_operators is not None and problem.operator not in self.trained_operators:
            reasons.append(f"operation {problem.operator} (trained: {' '.join(self.trained_operators)})")
        max_operands = self.data_config.get("max_operands")
        if max_operands is not None and len(problem.operands) > max_operands:
            reasons.append(f"{len(problem.operands)} operands (trained: at most {max_operands})")
        if self.trained_lengths is not None:
            fewest, most = self.trained_lengths
            lengths = [f"{x} has {digits} digit{'s' * (digits > 1)}"
                       for x, digits in zip(problem.operands, problem.operand_digits) if not fewest <= digits <= most]
            if lengths:
                reasons.append(f"{', '.join(lengths)} (trained: {fewest} to {most})")
        return reasons

    def check_datasets(self, *datasets):
        """A DataError naming the file (and the line) if the model cannot read one of `datasets`: another format or
        operand width than it learned, or a problem longer than its positions or digit places reach. Their
        vocabulary was checked when they were tokenised with this model's tokenizer."""
        for dataset in datasets:
            if dataset.format != self.data_format:
                raise DataError(f"{dataset.source}: its problems are in the {dataset.format.name!r} format, but "
                                f"{self.source} was trained on {self.data_format.name!r}; evaluate it on data "
                                f"generated with --format {self.data_format.name}")
            if dataset.operand_width != self.operand_width:
                raise DataError(f"{dataset.source}: its operands are padded to {dataset.operand_width} digits, but "
                                f"{self.source} learned {self.operand_width}; generate the data with --max-digits "
                                f"{self.operand_width}")
            for index, reason in self.model.unreadable(dataset.tokens, dataset.lengths):
                raise DataError(f"{dataset.location(index)}: {dataset.examples[index]!r} has {reason}")
        if self.model.config.pos_encoding == "abacus" and not self.data_format.reverse_operands:
            log.warning(f"--pos-encoding abacus counts digit places from each number's first digit, and the "
                        f"{self.data_format.name!r} format writes operands most significant digit first, so places do "
                        f"not align columns; generate the data with --format reversed-all for length generalisation")

    def encode_prompt(self, prompt):
        """The token ids of a prompt in this model's format, such as '12+34=' (prompt_for writes one); a ValueError
        if this model cannot read it: an unknown character, too long, or operands not padded to the width the model
        learned."""
        ids = self.tokenizer.encode(prompt)
        if prompt.endswith("=") and self.operand_width:
            widths = {len(text) for text in prompt[:-1].split(parse_prompt(prompt, self.data_format).operator)}
            if widths != {self.operand_width}:
                raise ValueError(f"this model reads operands padded to {self.operand_width} digits, as "
                                 f"{'0' * (self.operand_width - 1)}7")
        if reasons := [reason for _, reason in self.model.unreadable(torch.tensor([ids]), torch.tensor([len(ids)]))]:
            raise ValueError(f"{prompt!r} has {reasons[0]}")
        return ids
