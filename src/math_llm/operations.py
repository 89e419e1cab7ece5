"""The arithmetic operations, one registry entry each: symbol and name, the answer, how wide a padded answer gets,
the operands it takes, and the optional parts other code asks an operation for instead of testing its symbol
(carries, scratchpad steps, running sums, special edge cases). A new operation is an entry here and its symbols in
tokenizer.py. Pure functions on operand tuples, no randomness but the rng that sampling passes in.
"""

from dataclasses import dataclass, field
from functools import reduce
from typing import Callable

ANSWER_SEPARATOR = "r"  # between the numbers of an answer that has several: 17/5=3r2


@dataclass(frozen=True)
class Carries:
    """How an operation passes something on between columns (carries of +, borrows of -): what evaluation counts,
    carry-balanced sampling spreads evenly and the edge cases chain through every column."""
    count: Callable  # (operands) -> number of columns passing something on, None where there is no single count
    passes_on: Callable  # (digit of the larger operand, digit of the smaller, carry in) -> whether the column does
    top_column_passes_on: bool  # False for borrows: the larger operand's top column never borrows
    shortest_chained: int  # the shorter operand's fewest digits for a chain through every column
    equal_lengths_either_way: bool  # whether equal-length pairs are written smaller first half the time

    def full_chain(self, longer, shorter):
        """The columns of a pair of these lengths (larger operand first) that all pass on, or None if no pair
        of them can chain through every column."""
        if longer < shorter or shorter < self.shortest_chained:
            return None
        return set(range(longer if self.top_column_passes_on else longer - 1))

    def free_columns(self, longer, shorter):
        """(shared, beyond): how many columns the shorter operand shares that may pass on freely, and how many past
        it may continue a chain."""
        top_in_shared = not self.top_column_passes_on and longer == shorter
        top_beyond = not self.top_column_passes_on and longer > shorter
        return shorter - top_in_shared, longer - shorter - top_beyond


@dataclass(frozen=True)
class Operation:
    symbol: str  # written between every pair of operands; several operands are evaluated left to right
    name: str  # for command lines, where "-,*" would read as a flag
    answer: Callable  # (operands) -> the answer's numbers: (sum,) or (quotient, remainder)
    largest_answer: Callable  # (number of operands, operand digits) -> the largest |number| of each answer part
    max_operands: int | None = None  # None: any number
    negative_results: bool = False  # whether an answer may have a sign (evaluation scores the sign apart)
    nonzero_operands: frozenset = frozenset()  # positions whose operand may never be 0 (a divisor)
    carries: Carries | None = None
    scratchpad: Callable | None = None  # (operands, pairwise, width) -> the steps written before the answer
    scratchpad_max_operands: int | None = None  # None: as many as the operation takes
    running_sums: Callable | None = None  # (operands, places) -> each answer place's column total (the probe's target)
    # (length, a random number of that length, whether zeros belong to the data) -> [(kind, operands)]: the edge cases
    # of this operation's own (x-x, 999+1...), beside the all-9s, zeros and carry chains that edge_cases.py builds
    special_cases: Callable = field(default=lambda length, value, with_zeros: [])

    def refusal(self, operands):
        """Why these operands make no problem of this operation (too few or too many, a zero divisor), or None."""
        if len(operands) < 2 or (self.max_operands is not None and len(operands) > self.max_operands):
            return f"{self.name} takes {self.max_operands or 'two or more'} operands, not {len(operands)}"
        zeros = [position + 1 for position in sorted(self.nonzero_operands) if operands[position] == 0]
        return f"{self.name} takes no 0 as operand {zeros[0]}" if zeros else None

    def answer_widths(self, num_operands, width):
        """Digits of each part of a padded answer, for operands of `width` digits."""
        return tuple(len(str(bound)) for bound in self.largest_answer(num_operands, width))


# ---------------------------------------------------------------------------------------------------------------
# Columns of digits, least significant first: carries, borrows, and the steps of the scratchpad

def nines(num_digits):
    return 10 ** num_digits - 1


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


def column_terms(digits, carry, carry_digits=None):
    """A column's terms, as values and as written: its digits, then the carry; without carry_digits the carry only
    when it is not 0, with them always, zero-padded to that many digits."""
    if carry_digits:
        return [*digits, carry], [*map(str, digits), f"{carry:0{carry_digits}d}"]
    values = [*digits, carry] if carry else list(digits)
    return values, list(map(str, values))


def column_step(symbol, combine, digits, carry, write=str, carry_digits=None):
    """'5+8+1=14': one column in one step."""
    values, texts = column_terms(digits, carry, carry_digits)
    return f"{symbol.join(texts)}={write(reduce(combine, values))}"


def pairwise_step(symbol, combine, digits, carry, write=str, carry_digits=None):
    """'5+8=13+1=14': one column as a chain of two-term sums, the carry added last; each written total is the left
    term of the next link."""
    values, texts = column_terms(digits, carry, carry_digits)
    chain, total = texts[0], values[0]
    for value, text in zip(values[1:], texts[1:]):
        total = combine(total, value)
        chain += f"{symbol}{text}={write(total)}"
    return chain if len(values) > 1 else f"{chain}={write(total)}"


def add(x, y):
    return x + y


def subtract(x, y):
    return x - y


# ---------------------------------------------------------------------------------------------------------------
# Addition

def addition_carries(operands):
    return sum(total >= 10 for _, _, total in addition_columns(operands))


def addition_steps(operands, pairwise=False, width=None):
    """One step per column: its digits, the carry in (when not 0, or always when padded) and their sum:
    658+189 -> ['8+9=17', '5+8+1=14', '6+1+1=8']; pairwise: ['8+9=17', '5+8=13+1=14', '6+1=7+1=8']. A column then
    needs facts of two tables, digit + digit (100 facts) and total + carry (19), where whole columns need 210.
    `width` (the padded formats) gives every problem's steps one shape: a step for every column of the operands
    zero-padded to it, the carry always written, every number at a fixed width: 658+9 -> ['8+9+0=17', '5+0+1=06',
    '6+0+0=06']."""
    step = pairwise_step if pairwise else column_step
    total_digits = len(str(10 * len(operands) - 1))  # the largest column total: every digit 9, the largest carry
    write = (lambda value: f"{value:0{total_digits}d}") if width else str
    carry_digits = len(str(len(operands) - 1)) if width else None
    return [step("+", add, digits, carry, write, carry_digits)
            for digits, carry, _ in addition_columns(operands, width)]


def addition_cases(length, value, with_zeros):
    """999+1 and 1+999: a carry from the first column through all the others."""
    if not with_zeros:
        return []
    return [("carry through every digit", (nines(length), 1)), ("carry through every digit", (1, nines(length)))]


ADDITION = Operation(
    symbol="+", name="add",
    answer=lambda operands: (sum(operands),),
    largest_answer=lambda num_operands, width: (num_operands * nines(width),),
    carries=Carries(count=addition_carries, passes_on=lambda x, y, carry: x + y + carry >= 10,
                    top_column_passes_on=True, shortest_chained=1, equal_lengths_either_way=False),
    scratchpad=addition_steps,
    special_cases=addition_cases,
)


# ---------------------------------------------------------------------------------------------------------------
# Subtraction

def subtraction_borrows(operands):
    """Borrows of the larger operand minus the smaller; None with more than two operands, which have no single
    count."""
    if len(operands) != 2:
        return None
    return sum(difference < 0 for _, _, difference in subtraction_columns(*sorted(operands, reverse=True)))


def subtraction_steps(operands, pairwise=False, width=None):
    """Unpadded: the larger operand minus the smaller, after a step that swaps them when the result is negative:
    12-307 -> ['307-12', '7-2=5', '0-1=-1', '3-1=2'], a difference negative where its column borrows. Padded: a - b
    first whatever the sign (its last column borrows exactly when the result is negative), then, when negative, the
    swap and b - a: 12-307 -> ['2-7-0=-05', '1-0-1=+00', '0-3-0=-03', '307-012', '7-2-0=+05', '0-1-0=-01',
    '3-0-1=+02']: the sign is read off one step instead of a comparison of whole numbers, in two shapes, by sign."""
    a, b = operands
    step = pairwise_step if pairwise else column_step
    style = (lambda value: f"{value:+03d}", 1) if width else ()  # padded: a column's difference is in -10 .. 9

    def worked(x, y):
        return [step("-", subtract, digits, borrow, *style) for digits, borrow, _ in subtraction_columns(x, y, width)]

    if not width:
        return ([f"{b}-{a}"] if a < b else []) + worked(max(a, b), min(a, b))
    return worked(a, b) + ([f"{b:0{width}d}-{a:0{width}d}", *worked(b, a)] if a < b else [])


def subtraction_cases(length, value, with_zeros):
    """x-x is zero; 1000-1 borrows through every digit (its first operand has `length` digits)."""
    cases = [("zero result", (value, value))]
    if with_zeros and length > 1:
        cases.append(("carry through every digit", (10 ** (length - 1), 1)))
    return cases


SUBTRACTION = Operation(
    symbol="-", name="sub",
    answer=lambda operands: (reduce(subtract, operands),),
    largest_answer=lambda num_operands, width: ((num_operands - 1) * nines(width),),
    negative_results=True,
    carries=Carries(count=subtraction_borrows, passes_on=lambda x, y, borrow: x - y - borrow < 0,
                    top_column_passes_on=False, shortest_chained=2, equal_lengths_either_way=True),
    scratchpad=subtraction_steps, scratchpad_max_operands=2,
    special_cases=subtraction_cases,
)


# ---------------------------------------------------------------------------------------------------------------
# Multiplication

def multiplication_steps(operands, pairwise=False, width=None):
    """One partial product per digit of b, then their shifted sum: 12*34 -> ['12*4=48', '12*3=36', '48+360=408'].
    Padded, the partial products write their operands padded as the prompt does, the products and their sum at the
    width they can reach. `pairwise` changes nothing: the steps have no columns."""
    a, b = operands
    pad = width or 1  # zero-padding to 1 digit writes a number as it is
    partials = [(digit, a * int(digit)) for digit in reversed(f"{b:0{pad}d}")]
    partial_pad, product_pad = (width + 1, 2 * width) if width else (1, 1)
    shifted = "+".join(f"{partial * 10 ** place:0{product_pad}d}" for place, (_, partial) in enumerate(partials))
    return ([f"{a:0{pad}d}*{digit}={partial:0{partial_pad}d}" for digit, partial in partials]
            + [f"{shifted}={a * b:0{product_pad}d}"])


def multiplication_running_sums(operands, num_places):
    """The column totals of a * b, least significant place first, for `num_places` places: place k's total is
    the sum of the digit products a_i * b_j with i + j = k plus the carry from place k - 1. Its last digit is the
    answer's digit k, the rest is the next carry: the "running sum" that Bai et al. (2025) found a model must
    represent to multiply, and that the running-sum probe teaches it to. None for more than two operands."""
    if len(operands) != 2:
        return None
    a_digits, b_digits = (list(map(int, str(x)[::-1])) for x in operands)
    totals, carry = [], 0
    for place in range(num_places):
        total = carry + sum(digit * b_digits[place - i] for i, digit in enumerate(a_digits)
                            if 0 <= place - i < len(b_digits))
        totals.append(total)
        carry = total // 10
    return totals


def multiplication_cases(length, value, with_zeros):
    return [("zero result", (value, 0))] if with_zeros else []


MULTIPLICATION = Operation(
    symbol="*", name="mul",
    answer=lambda operands: (reduce(lambda x, y: x * y, operands),),
    largest_answer=lambda num_operands, width: (nines(width) ** num_operands,),
    scratchpad=multiplication_steps, scratchpad_max_operands=2,
    running_sums=multiplication_running_sums,
    special_cases=multiplication_cases,
)


# ---------------------------------------------------------------------------------------------------------------
# Division with remainder

def division_cases(length, value, with_zeros):
    """A quotient of 0: a dividend smaller than its divisor of the same length."""
    return [("zero result", (min(value, nines(length) - 1), nines(length)))]


DIVISION = Operation(
    symbol="/", name="div",
    answer=lambda operands: divmod(*operands),
    largest_answer=lambda num_operands, width: (nines(width), nines(width) - 1),
    max_operands=2, nonzero_operands=frozenset({1}),
    special_cases=division_cases,
)


OPERATIONS = {operation.symbol: operation for operation in (ADDITION, SUBTRACTION, MULTIPLICATION, DIVISION)}
OPERATION_NAMES = {operation.name: operation.symbol for operation in OPERATIONS.values()}


def operation(symbol):
    """The registry entry of `symbol`; a ValueError for anything else (never a fall-through to another one)."""
    try:
        return OPERATIONS[symbol]
    except KeyError:
        raise ValueError(f"unknown operation {symbol!r} (known: {' '.join(OPERATIONS)})") from None
