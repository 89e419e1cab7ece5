"""One arithmetic problem and its text in a data format: rendering, parsing the prompt back to numbers, and reading
answers (final answer, digits by place, scratchpad steps). Pure functions, no randomness: what an operation computes
is in operations.py, how numbers are written in formats.py.
"""

import re
from dataclasses import dataclass

from math_llm.formats import PLAIN
from math_llm.operations import ANSWER_SEPARATOR, OPERATIONS, operation
from math_llm.tokenizer import END_TOKEN, THINK_END, THINK_START


@dataclass(frozen=True)
class Problem:
    operator: str  # the symbol of an operation, between every pair of operands
    operands: tuple  # non-negative ints

    def __post_init__(self):
        refusal = self.operation.refusal(self.operands)
        if refusal:
            raise ValueError(f"{self.written}: {refusal}")

    @property
    def written(self):
        """'12+7': as a person writes it, digits most significant first, no padding."""
        return self.operator.join(map(str, self.operands))

    @property
    def operation(self):
        return operation(self.operator)

    @property
    def answer_numbers(self):
        """The answer's numbers: (result,) or, for division, (quotient, remainder)."""
        return self.operation.answer(self.operands)

    @property
    def result(self):
        """The answer's first number: the result, the quotient of a division."""
        return self.answer_numbers[0]

    @property
    def operand_digits(self):
        """Digits of each operand's value (0 has one)."""
        return tuple(len(str(x)) for x in self.operands)

    @property
    def digits_key(self):
        """'3x12': the operand lengths as the breakdowns and the heatmap name a cell."""
        return "x".join(map(str, self.operand_digits))

    def render(self, data_format=PLAIN, width=None):
        """The whole example, prompt and answer: "12+7=19<end>" in the plain format. Formats padded to a fixed width
        write operands with `width` digits (default: as many as the longest operand has); those padded to the
        longest operand always as many as that."""
        return f"{self.prompt_text(data_format, width)}{self.answer_text(data_format, width)}{END_TOKEN}"

    def prompt_text(self, data_format=PLAIN, width=None):
        """The prompt alone, as render writes it: "12+07=" in the padded format at width 2."""
        width = self.padded_width(data_format, width)
        operands = [f"{x:0{width}d}" if width else str(x) for x in self.operands]
        if data_format.reverse_operands:
            operands = [text[::-1] for text in operands]
        return f"{self.operator.join(operands)}="

    def padded_width(self, data_format, width=None):
        """The digits each operand is written with: None where the format does not pad."""
        if data_format.padding == "longest" or (data_format.fixed_width and not width):
            return max(self.operand_digits)
        return width if data_format.fixed_width else None

    def answer_text(self, data_format=PLAIN, width=None):
        width = self.padded_width(data_format, width)
        numbers = self.answer_numbers
        widths = self.operation.answer_widths(len(self.operands), width) if width else (0,) * len(numbers)
        parts = []
        for number, part_width in zip(numbers, widths):
            digits = str(abs(number)).zfill(part_width)
            parts.append(("-" if number < 0 else "") + (digits[::-1] if data_format.reverse_answer else digits))
        answer = ANSWER_SEPARATOR.join(parts)
        if not data_format.scratchpad:
            return answer
        if refusal := scratchpad_refusal(data_format, self.operation, len(self.operands)):
            raise ValueError(refusal)
        steps = self.operation.scratchpad(self.operands, data_format.scratchpad == "pairwise",
                                          width if data_format.fixed_width else None)
        return f"{THINK_START}{' '.join(steps)}{THINK_END}{answer}"


def scratchpad_refusal(data_format, op, num_operands):
    """Why the format cannot write the steps of `op` with `num_operands` operands (it has none, or for fewer
    operands), or None: also None for formats without a scratchpad."""
    if not data_format.scratchpad:
        return None
    if op.scratchpad is None:
        return (f"the {data_format.name!r} format writes scratchpad steps, and {op.name} ({op.symbol}) has none; "
                f"choose a format without a scratchpad")
    limit = op.scratchpad_max_operands
    if limit is not None and num_operands > limit:
        return (f"the {data_format.name!r} format writes steps for {op.symbol} with at most {limit} operands; use "
                f"--max-operands {limit}")
    return None


# ---------------------------------------------------------------------------------------------------------------
# Reading text back

def split_example(text):
    """'12+34=46<end>' -> ('12+34=', '46'): the prompt the model sees and the answer it must write."""
    prompt, equals, rest = text.partition("=")
    if not equals or not rest.endswith(END_TOKEN):
        raise ValueError(f"expected 'a+b=c{END_TOKEN}', got {text!r}")
    return prompt + "=", rest[: -len(END_TOKEN)]


# Two or more digit strings joined by one operator, then "="
PROMPT_PATTERN = re.compile("[0-9]+([" + re.escape("".join(OPERATIONS)) + r"])[0-9]+(?:\1[0-9]+)*=")
ANSWER_PART = re.compile("(-?)([0-9]+)")  # one number of an answer, sign and digits: 3r2 has two


def prompt_operator(prompt):
    """The operator of a problem's prompt ('12+34=' -> '+'); ValueError for anything else. Cheap enough to check
    every example of a dataset."""
    match = PROMPT_PATTERN.fullmatch(prompt)
    if not match:
        raise ValueError(f"expected a prompt like '12+34=' with one of the operators {' '.join(OPERATIONS)}, "
                         f"got {prompt!r}")
    return match.group(1)


def parse_prompt(prompt, data_format=PLAIN):
    """'12+07=' -> Problem('+', (12, 7)), undoing the format's padding and reversal; ValueError for anything that
    is not a problem."""
    operator = prompt_operator(prompt)
    texts = prompt[:-1].split(operator)
    if data_format.reverse_operands:
        texts = [text[::-1] for text in texts]
    return Problem(operator, tuple(int(text) for text in texts))


def read_written_problem(text):
    """A problem as a person types it, '12 + 34 =' or '12+34' (digits most significant first, unpadded) ->
    Problem('+', (12, 34)); a ValueError for anything else, the start of a problem ('7+') included."""
    prompt = text.replace(" ", "").removesuffix("=") + "="
    if not PROMPT_PATTERN.fullmatch(prompt):
        raise ValueError(f"expected a whole problem such as 12+34 with one of the operators {' '.join(OPERATIONS)}, "
                         f"got {text!r}")
    return parse_prompt(prompt)


def read_answer(answer, data_format):
    """The numbers a model's answer means, in normal digit order: '640' -> (46,) in the padded-reversed format,
    '-70' -> (-7,) in the reversed one, '3r2' -> (3, 2), a scratchpad's final answer; None if it is no answer
    (not numbers, or a scratchpad cut off before its </think>)."""
    parts = [ANSWER_PART.fullmatch(part) for part in final_answer(answer).split(ANSWER_SEPARATOR)]
    if not all(parts):
        return None
    return tuple(int(sign + (digits[::-1] if data_format.reverse_answer else digits))
                 for sign, digits in (part.groups() for part in parts))


def written_answer(numbers):
    """(3, 2) -> '3r2', (-7,) -> '-7': an answer's numbers as a person writes them."""
    return ANSWER_SEPARATOR.join(map(str, numbers))


def final_answer(answer):
    """The answer a scratchpad ends with ('<think>...</think>19' -> '19'; '' when cut off before its </think>);
    other answers are already final."""
    if THINK_START not in answer:
        return answer
    _, think_end, final = answer.rpartition(THINK_END)
    return final if think_end else ""


def answer_places(answer, data_format):
    """The digits of the final answer's first number by place, units first, sign dropped: '-847' -> '748' in the
    plain format; a reversed answer already reads so. Padded answers keep their leading zeros as places. A
    scratchpad cut off before its </think> has no answer, so no digits."""
    digits = final_answer(answer).partition(ANSWER_SEPARATOR)[0].lstrip("-")
    return digits if data_format.reverse_answer else digits[::-1]


def written_steps(answer):
    """The steps between <think> and </think>, as a list (empty without a scratchpad)."""
    if not answer.startswith(THINK_START):
        return []
    return answer[len(THINK_START):].partition(THINK_END)[0].split()


def cell_sort_key(key):
    """Orders cell keys ('2x9' before '2x10') and carry counts numerically, anything else after them by name."""
    text = str(key)
    return (0, tuple(map(int, text.split("x")))) if text.replace("x", "").isdigit() else (1, text)
