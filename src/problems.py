"""One arithmetic problem and its text in each data format: rendering, parsing the prompt back to numbers, carries
and the scratchpad's steps. Pure functions, no randomness (generation lives in data.py, edge cases in edge_cases.py).
"""

import re
from dataclasses import dataclass
from functools import reduce

from src.tokenizer import END_TOKEN, THINK_END, THINK_START

OPERATIONS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}
OPERATION_NAMES = {"add": "+", "sub": "-", "mul": "*"}  # for command lines, where "-,*" would read as a flag
FORMATS = {  # name: what 12 + 7 looks like with --max-digits 2 (58 + 67 or 58 + 7 where a carry shows more)
    "plain": "12+7=19 (the seed's format)",
    "reversed": "12+7=91 (answer digits least significant first, the order in which carries are computed)",
    "padded": "12+07=019 (operands zero-padded to --max-digits, the answer to its largest possible width)",
    "padded-reversed": "12+07=910 (padded, answer reversed, as minGPT's adder)",
    "reversed-all": "21+7=91 (operands and answer least significant digit first)",
    "padded-reversed-all": "21+70=910 (padded, operands and answer reversed)",
    "aligned-reversed-all": "21+70=910 (operands and answer reversed, each problem's operands zero-padded to its "
                            "longest, the answer to the width its sum can reach: complete columns at any length)",
    "scratchpad": "12+7=<think>2+7=9 1=1</think>19 (digit-by-digit steps, then the plain answer)",
    "scratchpad-pairwise": "58+67=<think>8+7=15 5+6=11+1=12</think>125 (the same, each column a chain of two-term "
                           "sums, the carry added last: the steps need 119 facts where whole columns need 210)",
    "padded-scratchpad": "12+07=<think>2+7+0=09 1+0+0=01</think>019 (operands and answer padded to --max-digits, a "
                         "step for every column, the carry always written, numbers at fixed widths: the steps have "
                         "the same shape in every problem)",
    "padded-scratchpad-pairwise": "58+07=<think>8+7=15+0=15 5+0=05+1=06</think>065 (both)",
}
# Scratchpad steps are defined for these (operation: most operands)
SCRATCHPAD_LIMITS = {"+": None, "-": 2, "*": 2}


def is_padded(data_format):
    """Operands padded to one width for the whole dataset (--max-digits)."""
    return data_format.startswith("padded")


def is_aligned(data_format):
    """Operands padded to the longest of their own problem, so the format has no fixed width."""
    return data_format.startswith("aligned")


def is_scratchpad(data_format):
    """Steps between <think> and </think> before the answer."""
    return "scratchpad" in data_format


def is_pairwise(data_format):
    """A scratchpad whose columns are chains of two-term sums."""
    return data_format.endswith("pairwise")


def answer_reversed(data_format):
    return "reversed" in data_format


def operands_reversed(data_format):
    return data_format.endswith("reversed-all")


@dataclass(frozen=True)
class Problem:
    operator: str  # one of OPERATIONS, between every pair of operands; evaluated left to right
    operands: tuple  # non-negative ints

    @property
    def result(self):
        return reduce(OPERATIONS[self.operator], self.operands)

    @property
    def operand_digits(self):
        """Digits of each operand's value (0 has one)."""
        return tuple(len(str(x)) for x in self.operands)

    @property
    def digits_key(self):
        """'3x12': the operand lengths as the breakdowns and the heatmap name a cell."""
        return "x".join(map(str, self.operand_digits))

    def render(self, data_format="plain", width=None):
        """The whole example, prompt and answer: "12+7=19<end>" in the plain format. Padded formats write operands
        with `width` digits (default: as many as the longest operand has); aligned ones as many as that always."""
        if is_aligned(data_format):
            width = None
        if is_padded(data_format) or is_aligned(data_format):
            width = width or max(self.operand_digits)
            operands = [f"{x:0{width}d}" for x in self.operands]
        else:
            operands = [str(x) for x in self.operands]
        if operands_reversed(data_format):
            operands = [text[::-1] for text in operands]
        return f"{self.operator.join(operands)}={self.answer_text(data_format, width)}{END_TOKEN}"

    def answer_text(self, data_format="plain", width=None):
        result = self.result
        digits = str(abs(result))
        if is_padded(data_format) or is_aligned(data_format):
            width = width or max(self.operand_digits)
            digits = digits.zfill(answer_width(self.operator, len(self.operands), width))
        if answer_reversed(data_format):
            digits = digits[::-1]
        answer = ("-" if result < 0 else "") + digits
        if is_scratchpad(data_format):
            steps = scratchpad_steps(self, is_pairwise(data_format), width if is_padded(data_format) else None)
            return f"{THINK_START}{' '.join(steps)}{THINK_END}{answer}"
        return answer


def answer_width(operator, num_operands, width):
    """Digits of the largest possible |result| for operands of `width` digits: the padded answer's width."""
    largest = 10 ** width - 1
    bound = {"+": num_operands * largest, "-": (num_operands - 1) * largest, "*": largest ** num_operands}[operator]
    return len(str(bound))


# ---------------------------------------------------------------------------------------------------------------
# Reading text back

def split_example(text):
    """'12+34=46<end>' -> ('12+34=', '46'): the prompt the model sees and the answer it must write."""
    prompt, equals, rest = text.partition("=")
    if not equals or not rest.endswith(END_TOKEN):
        raise ValueError(f"expected 'a+b=c{END_TOKEN}', got {text!r}")
    return prompt + "=", rest[: -len(END_TOKEN)]


# Two or more digit strings joined by one operator, then "="
PROMPT_PATTERN = re.compile(r"[0-9]+([-+*])[0-9]+(?:\1[0-9]+)*=")


def prompt_operator(prompt):
    """The operator of a problem's prompt ('12+34=' -> '+'); ValueError for anything else. Cheap enough to check
    every example of a dataset."""
    match = PROMPT_PATTERN.fullmatch(prompt)
    if not match:
        raise ValueError(f"expected a prompt like '12+34=' with one of the operators {' '.join(OPERATIONS)}, "
                         f"got {prompt!r}")
    return match.group(1)


def parse_prompt(prompt, data_format="plain"):
    """'12+07=' -> Problem('+', (12, 7)), undoing the format's padding and reversal."""
    operator = prompt_operator(prompt)
    texts = prompt[:-1].split(operator)
    if operands_reversed(data_format):
        texts = [text[::-1] for text in texts]
    return Problem(operator, tuple(int(text) for text in texts))


def final_answer(answer):
    """The answer a scratchpad ends with ('<think>...</think>19' -> '19'; '' when cut off before its </think>);
    other answers are already final."""
    if THINK_START not in answer:
        return answer
    _, think_end, final = answer.rpartition(THINK_END)
    return final if think_end else ""


def written_places(num_digits, data_format):
    """The place (0: units) of each of an answer's `num_digits` digits, in the order the format writes them."""
    return range(num_digits) if answer_reversed(data_format) else range(num_digits - 1, -1, -1)


def answer_places(answer, data_format):
    """The final answer's digits by place, units first, sign dropped: '-847' -> '748' in the plain format; a
    reversed answer already reads so. Padded answers keep their leading zeros as places. A scratchpad cut off
    before its </think> has no answer, so no digits."""
    digits = final_answer(answer).lstrip("-")
    return digits if answer_reversed(data_format) else digits[::-1]


def written_steps(answer):
    """The steps between <think> and </think>, as a list (empty without a scratchpad)."""
    if not answer.startswith(THINK_START):
        return []
    return answer[len(THINK_START):].partition(THINK_END)[0].split()


# ---------------------------------------------------------------------------------------------------------------
# Carries and scratchpad steps, both by columns of digits, least significant first

def digit_columns(operands, width=None):
    """Columns of digits, least significant first: (658, 9) -> [[8, 9], [5], [6]] (shorter operands end early);
    with a width, operands are zero-padded to it first: [[8, 9], [5, 0], [6, 0]]."""
    texts = [str(x).zfill(width or 1)[::-1] for x in operands]
    return [[int(text[i]) for text in texts if i < len(text)] for i in range(max(map(len, texts)))]


def addition_columns(operands, width=None):
    """[(digits, carry in, column sum)] of the schoolbook addition."""
    columns, carry = [], 0
    for digits in digit_columns(operands, width):
        total = sum(digits) + carry
        columns.append((digits, carry, total))
        carry = total // 10
    return columns


def subtraction_columns(larger, smaller, width=None):
    """[(digits, borrow in, difference)] of larger - smaller; a negative difference borrows from the next column.
    With the smaller operand first, the last column borrows (the padded scratchpad reads the sign from it)."""
    columns, borrow = [], 0
    for digits in digit_columns((larger, smaller), width):
        difference = digits[0] - sum(digits[1:]) - borrow
        columns.append((digits, borrow, difference))
        borrow = int(difference < 0)
    return columns


def multiplication_running_sums(a, b, num_places):
    """The column totals of a * b, least significant place first, for `num_places` places: place k's total is
    the sum of the digit products a_i * b_j with i + j = k plus the carry from place k - 1. Its last digit is the
    answer's digit k, the rest is the next carry: the "running sum" that Bai et al. (2025) found a model must
    represent to multiply, and that --running-sum-loss teaches it to."""
    a_digits, b_digits = (list(map(int, str(x)[::-1])) for x in (a, b))
    totals, carry = [], 0
    for place in range(num_places):
        total = carry + sum(digit * b_digits[place - i] for i, digit in enumerate(a_digits)
                            if 0 <= place - i < len(b_digits))
        totals.append(total)
        carry = total // 10
    return totals


def num_carries(problem):
    """Carries of an addition (columns passing something on), borrows of a two-operand subtraction (of the larger
    operand minus the smaller); None for multiplication and longer subtractions, which have no single count."""
    if problem.operator == "+":
        return sum(total >= 10 for _, _, total in addition_columns(problem.operands))
    if problem.operator == "-" and len(problem.operands) == 2:
        return sum(difference < 0 for _, _, difference in subtraction_columns(*sorted(problem.operands, reverse=True)))
    return None


def scratchpad_steps(problem, pairwise=False, width=None):
    """The steps the scratchpad format writes before the answer, e.g. 658+189 -> ['8+9=17', '5+8+1=14', '6+1+1=8'].

    Addition: one step per column, its digits, the carry in (when not 0) and their sum. Subtraction: the same with
    borrows, the difference negative where the column borrows; when the result is negative, a first step swaps the
    operands ('658-189'). Multiplication: one partial product per digit of b, then their shifted sum.

    `pairwise` makes each column a chain of two-term sums, the carry added last: 658+189 -> ['8+9=17',
    '5+8=13+1=14', '6+1=7+1=8']. A column then needs facts of two tables, digit + digit (100 facts) and total +
    carry (19), where whole columns need 210: a few hundred problems hold them all.

    `width` (the padded formats) gives the steps of every problem one shape: a step for every column of the operands
    zero-padded to it, the carry always written, every number at a fixed width (a difference with its sign):
    658+9 -> ['8+9+0=17', '5+0+1=06', '6+0+0=06']. Subtraction works a - b even when it is negative, where the
    last column borrows; then it swaps and works b - a: 12-307 -> ['2-7-0=-05', '1-0-1=+00', '0-3-0=-03',
    '307-012', '7-2-0=+05', '0-1-0=-01', '3-0-1=+02'] (two shapes, by sign). The partial products write their
    operands padded as the prompt does, the products and their sum at the width they can reach."""
    operator, operands = problem.operator, problem.operands
    limit = SCRATCHPAD_LIMITS[operator]
    if limit is not None and len(operands) > limit:
        raise ValueError(f"the scratchpad format handles {operator} with at most {limit} operands, got {problem}")
    step = pairwise_step if pairwise else column_step
    if operator == "+":
        total_digits = len(str(10 * len(operands) - 1))  # the largest column total: every digit 9, the largest carry
        write = (lambda value: f"{value:0{total_digits}d}") if width else str
        carry_digits = len(str(len(operands) - 1)) if width else None
        return [step("+", digits, carry, write, carry_digits) for digits, carry, _ in addition_columns(operands, width)]
    a, b = operands
    if operator == "-":
        return subtraction_steps(a, b, step, width)
    pad = width or 1  # zero-padding to 1 digit writes a number as it is
    partials = [(digit, a * int(digit)) for digit in reversed(f"{b:0{pad}d}")]
    partial_pad, product_pad = (width + 1, 2 * width) if width else (1, 1)
    shifted = "+".join(f"{partial * 10 ** place:0{product_pad}d}" for place, (_, partial) in enumerate(partials))
    return ([f"{a:0{pad}d}*{digit}={partial:0{partial_pad}d}" for digit, partial in partials]
            + [f"{shifted}={a * b:0{product_pad}d}"])


def subtraction_steps(a, b, step, width=None):
    """The steps of a - b: unpadded, the larger operand minus the smaller, after a swap step when a < b; padded,
    a - b first whatever the sign (its last column borrows exactly when the result is negative), then, when
    negative, the swap and b - a: the sign is read off one step instead of a comparison of whole numbers."""
    style = (lambda value: f"{value:+03d}", 1) if width else ()  # padded: a column's difference is in -10 .. 9

    def worked(x, y):
        return [step("-", digits, borrow, *style) for digits, borrow, _ in subtraction_columns(x, y, width)]

    if not width:
        return ([f"{b}-{a}"] if a < b else []) + worked(max(a, b), min(a, b))
    return worked(a, b) + ([f"{b:0{width}d}-{a:0{width}d}", *worked(b, a)] if a < b else [])


def column_terms(digits, carry, carry_digits=None):
    """A column's terms, as values and as written: its digits, then the carry; without carry_digits the carry only
    when it is not 0, with them always, zero-padded to that many digits."""
    if carry_digits:
        return [*digits, carry], [*map(str, digits), f"{carry:0{carry_digits}d}"]
    values = [*digits, carry] if carry else list(digits)
    return values, list(map(str, values))


def column_step(operator, digits, carry, write=str, carry_digits=None):
    """'5+8+1=14': one column in one step."""
    values, texts = column_terms(digits, carry, carry_digits)
    return f"{operator.join(texts)}={write(reduce(OPERATIONS[operator], values))}"


def pairwise_step(operator, digits, carry, write=str, carry_digits=None):
    """'5+8=13+1=14': one column as a chain of two-term sums, the carry added last; each written total is the left
    term of the next link."""
    values, texts = column_terms(digits, carry, carry_digits)
    chain, total = texts[0], values[0]
    for value, text in zip(values[1:], texts[1:]):
        total = OPERATIONS[operator](total, value)
        chain += f"{operator}{text}={write(total)}"
    return chain if len(values) > 1 else f"{chain}={write(total)}"


def cell_sort_key(key):
    """Orders cell keys ('2x9' before '2x10') and carry counts numerically, anything else after them by name."""
    text = str(key)
    return (0, tuple(map(int, text.split("x")))) if text.replace("x", "").isdigit() else (1, text)


def operand_count_for_digits(num_digits):
    """How many integers have exactly this many digits (0 counts as a 1-digit number)."""
    return 10 if num_digits == 1 else 9 * 10 ** (num_digits - 1)


def smallest_with_digits(num_digits):
    return 0 if num_digits == 1 else 10 ** (num_digits - 1)

