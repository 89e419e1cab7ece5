"""Single problems in every format and operation: the text written, the prompt read back, carries and the
scratchpad's steps; division with remainder, added as one registry entry, in every format it has a meaning in. A
wrong answer, a wrong reversal or a wrong step fails here."""

import random
import re

import pytest

from math_llm.formats import FORMATS, PLAIN, data_format
from math_llm.operations import OPERATIONS, operation
from math_llm.problems import (Problem, answer_places, final_answer, parse_prompt, scratchpad_refusal, split_example,
                               written_steps)
from tests.helpers import num_carries


def answer_width(operator, num_operands, width):
    return OPERATIONS[operator].answer_widths(num_operands, width)[0]


def scratchpad_steps(problem, pairwise=False, width=None):
    return problem.operation.scratchpad(problem.operands, pairwise, width)


@pytest.mark.parametrize("data_format, addition, subtraction, multiplication", [
    ("plain", "658+189=847", "189-658=-469", "658*189=124362"),
    ("reversed", "658+189=748", "189-658=-964", "658*189=263421"),
    ("padded", "0658+0189=00847", "0189-0658=-0469", "0658*0189=00124362"),
    ("padded-reversed", "0658+0189=74800", "0189-0658=-9640", "0658*0189=26342100"),
    ("reversed-all", "856+981=748", "981-856=-964", "856*981=263421"),
    ("padded-reversed-all", "8560+9810=74800", "9810-8560=-9640", "8560*9810=26342100"),
    # padded to each problem's own longest operand, whatever the width
    ("aligned-reversed-all", "856+981=7480", "981-856=-964", "856*981=263421"),
])
def test_each_format_writes_the_true_result(data_format, addition, subtraction, multiplication):
    for (a, b), operator, expected in [((658, 189), "+", addition), ((189, 658), "-", subtraction),
                                       ((658, 189), "*", multiplication)]:
        assert Problem(operator, (a, b)).render(FORMATS[data_format], width=4) == expected + "<end>"


def test_the_scratchpad_writes_the_issues_example():
    assert Problem("+", (658, 189)).render(FORMATS["scratchpad"]) == \
        "658+189=<think>8+9=17 5+8+1=14 6+1+1=8</think>847<end>"


def test_more_operands_and_the_seeds_format():
    assert Problem("+", (12, 7, 30)).render() == "12+7+30=49<end>"
    assert Problem("-", (5, 3, 9)).render() == "5-3-9=-7<end>"
    assert Problem("+", (58, 67)).render() == "58+67=125<end>"


@pytest.mark.parametrize("operator, operands, width, digits", [
    ("+", 2, 3, 4), ("+", 12, 3, 5), ("-", 2, 3, 3), ("-", 3, 3, 4), ("*", 2, 3, 6), ("*", 3, 2, 6)])
def test_padded_answers_have_room_for_the_largest_result(operator, operands, width, digits):
    assert answer_width(operator, operands, width) == digits


def random_problem(operator, rng, num_operands):
    """Operands of 1 to 5 digits; a divisor is never 0."""
    while True:
        operands = tuple(rng.randrange(10 ** rng.randint(1, 5)) for _ in range(num_operands))
        if operation(operator).refusal(operands) is None:
            return Problem(operator, operands)


@pytest.mark.parametrize("name", list(FORMATS))
@pytest.mark.parametrize("operator", list(OPERATIONS))
def test_random_problems_read_back_and_their_answers_decode_to_the_result(name, operator):
    data_format, rng = FORMATS[name], random.Random(0)
    if operator == "/" and data_format.scratchpad:
        return  # no steps: refused, see test_formats_an_operation_has_no_meaning_in_are_refused
    for _ in range(300):
        if operator == "/" or data_format.scratchpad and operator != "+":
            num_operands = 2
        else:
            num_operands = rng.randint(2, 4)
        problem = random_problem(operator, rng, num_operands)
        prompt, answer = split_example(problem.render(data_format, width=5))
        assert parse_prompt(prompt, data_format) == problem
        places = answer_places(answer, data_format)  # units first, in every format
        assert int(places[::-1]) == abs(problem.result)
        numbers = final_answer(answer).split("r")
        assert len(numbers) == len(problem.answer_numbers)
        widths = (OPERATIONS[operator].answer_widths(num_operands, 5) if data_format.fixed_width else
                  OPERATIONS[operator].answer_widths(num_operands, max(problem.operand_digits))
                  if data_format.padded else None)
        for index, (number, expected) in enumerate(zip(numbers, problem.answer_numbers)):
            sign, digits = ("-", number[1:]) if number.startswith("-") else ("", number)
            if data_format.reverse_answer:
                digits = digits[::-1]
            assert int(sign + digits) == expected
            assert len(digits) == widths[index] if widths else digits == str(abs(expected))
        if data_format.padding == "longest":
            longest = max(problem.operand_digits)
            assert {len(operand) for operand in prompt[:-1].split(operator)} == {longest}


def test_division_writes_quotient_and_remainder_in_every_format_without_a_scratchpad():
    problem = Problem("/", (17, 5))
    assert problem.answer_numbers == (3, 2) and problem.result == 3
    assert problem.render() == "17/5=3r2<end>"
    assert problem.render(FORMATS["reversed"]) == "17/5=3r2<end>"
    assert Problem("/", (1234, 7)).render(FORMATS["reversed"]) == "1234/7=671r2<end>"  # 176 r 2
    assert Problem("/", (1234, 7)).render(FORMATS["padded"], width=4) == "1234/0007=0176r0002<end>"
    assert Problem("/", (1234, 7)).render(FORMATS["padded-reversed-all"], width=4) == "4321/7000=6710r2000<end>"
    assert Problem("/", (1234, 7)).render(FORMATS["aligned-reversed-all"]) == "4321/7000=6710r2000<end>"
    assert Problem("/", (3, 9)).render(FORMATS["padded-reversed"], width=1) == "3/9=0r3<end>"
    assert parse_prompt("4321/7000=", FORMATS["padded-reversed-all"]) == Problem("/", (1234, 7))
    assert answer_places("0176r0002", FORMATS["padded"]) == "6710"  # the quotient's digits, units first


def test_a_zero_divisor_is_no_problem_and_an_unknown_operation_no_fall_through():
    with pytest.raises(ValueError, match="5/0: div takes no 0 as operand 2"):
        Problem("/", (5, 0))
    with pytest.raises(ValueError, match="5/0: div takes no 0 as operand 2"):
        parse_prompt("5/0=")
    assert Problem("/", (0, 5)).answer_numbers == (0, 0)
    with pytest.raises(ValueError, match="div takes 2 operands, not 3"):
        Problem("/", (8, 4, 2))
    with pytest.raises(ValueError, match="unknown operation '%'"):
        Problem("%", (8, 4))
    with pytest.raises(ValueError, match="unknown data format 'upside-down'"):
        data_format("upside-down")


@pytest.mark.parametrize("name", [name for name, fmt in FORMATS.items() if fmt.scratchpad])
def test_formats_an_operation_has_no_meaning_in_are_refused(name):
    assert scratchpad_refusal(FORMATS[name], OPERATIONS["/"], 2) == (
        f"the '{name}' format writes scratchpad steps, and div (/) has none; choose a format without a scratchpad")
    with pytest.raises(ValueError, match=f"the '{name}' format writes scratchpad steps, and div"):
        Problem("/", (17, 5)).render(FORMATS[name])
    assert scratchpad_refusal(FORMATS[name], OPERATIONS["-"], 3).startswith(
        f"the '{name}' format writes steps for - with at most 2 operands")
    assert scratchpad_refusal(FORMATS[name], OPERATIONS["+"], 5) is None
    assert scratchpad_refusal(FORMATS["padded-reversed"], OPERATIONS["/"], 2) is None


SCRATCHPAD_FORMATS = [name for name, fmt in FORMATS.items() if fmt.scratchpad]


@pytest.mark.parametrize("name", SCRATCHPAD_FORMATS)
@pytest.mark.parametrize("operator", ["+", "-", "*"])
def test_every_scratchpad_step_is_a_true_equation(operator, name):
    """Each step 'x+y+c=s' (or a partial product, or the ordering step of a subtraction) holds, and the answer is
    right: the steps cannot be arithmetic nonsense that happens to end in the right result. A pairwise step is a
    chain 'x+y=s+c=t' of two-term sums; padded steps have one shape (subtraction two, by sign): a step for every
    column of the padded operands, and the same length in every problem."""
    rng, data_format = random.Random(1), FORMATS[name]
    pairwise, width = data_format.scratchpad == "pairwise", 6 if data_format.fixed_width else None
    shapes = set()
    for _ in range(300):
        a, b = rng.randrange(10 ** rng.randint(1, 6)), rng.randrange(10 ** rng.randint(1, 6))
        problem = Problem(operator, (a, b))
        steps = scratchpad_steps(problem, pairwise, width)
        shapes.add(tuple(map(len, steps)))
        passes = 1
        if operator == "-" and a < b and width:  # a - b, whose last column borrows, then b - a
            assert steps[width] == f"{b:06d}-{a:06d}" and steps[width - 1].rpartition("=")[2].startswith("-"), steps
            steps, passes = steps[:width] + steps[width + 1:], 2
        elif operator == "-" and a < b:
            assert steps[0] == f"{b}-{a}"
            steps = steps[1:]
        elif operator == "-" and width:  # no borrow out of the last column: not negative
            assert steps[-1].rpartition("=")[2].startswith("+"), steps
        if operator != "*":
            assert len(steps) == passes * (width or max(problem.operand_digits)), steps
        for step in steps:
            links = step.split("=")
            for left, right in zip(links, links[1:]):
                value = eval(re.sub(r"\b0+([0-9])", r"\1", left))  # noqa: S307 (digits, + - *; padding dropped)
                assert value == int(re.match("[-+]?[0-9]+", right).group()), step
                if pairwise and operator != "*":
                    assert len(re.findall("[0-9]+", left)) <= 2, step
        _, answer = split_example(problem.render(data_format, width=width))
        assert written_steps(answer) == scratchpad_steps(problem, pairwise, width)
        assert int(final_answer(answer)) == problem.result
    assert len(shapes) == (2 if operator == "-" else 1) if width else len(shapes) > 1  # subtraction: by sign


def test_padded_steps_keep_their_shape_with_many_operands():
    """Twelve operands carry up to 11 into a column: the carry is written at two digits in every column."""
    steps = scratchpad_steps(Problem("+", (99,) * 12), width=2)
    assert steps == ["9+9+9+9+9+9+9+9+9+9+9+9+00=108", "9+9+9+9+9+9+9+9+9+9+9+9+10=118"]
    assert Problem("+", (99,) * 12).render(FORMATS["padded-scratchpad"], width=2).endswith("</think>1188<end>")


def test_scratchpad_columns_carry_and_borrow():
    assert scratchpad_steps(Problem("+", (99, 1))) == ["9+1=10", "9+1=10"]
    assert scratchpad_steps(Problem("-", (100, 99))) == ["0-9=-9", "0-9-1=-10", "1-1=0"]
    assert scratchpad_steps(Problem("-", (12, 307))) == ["307-12", "7-2=5", "0-1=-1", "3-1=2"]
    assert scratchpad_steps(Problem("*", (12, 34))) == ["12*4=48", "12*3=36", "48+360=408"]
    with pytest.raises(ValueError, match="the 'scratchpad' format writes steps for - with at most 2 operands"):
        Problem("-", (1, 2, 3)).render(FORMATS["scratchpad"])


def test_pairwise_and_padded_steps():
    assert Problem("+", (658, 189)).render(FORMATS["scratchpad-pairwise"]) == \
        "658+189=<think>8+9=17 5+8=13+1=14 6+1=7+1=8</think>847<end>"
    assert scratchpad_steps(Problem("+", (99, 99, 99)), pairwise=True) == ["9+9=18+9=27", "9+9=18+9=27+2=29"]
    assert scratchpad_steps(Problem("+", (8, 687)), pairwise=True) == ["8+7=15", "8+1=9", "6=6"]
    assert scratchpad_steps(Problem("-", (100, 99)), pairwise=True) == ["0-9=-9", "0-9=-9-1=-10", "1-1=0"]
    assert scratchpad_steps(Problem("-", (12, 307)), pairwise=True) == ["307-12", "7-2=5", "0-1=-1", "3-1=2"]
    # padded: the carry always written, every number at a fixed width
    assert Problem("+", (8, 687)).render(FORMATS["padded-scratchpad"], width=3) == \
        "008+687=<think>8+7+0=15 0+8+1=09 0+6+0=06</think>0695<end>"
    assert Problem("+", (58, 7)).render(FORMATS["padded-scratchpad-pairwise"], width=3) == \
        "058+007=<think>8+7=15+0=15 5+0=05+1=06 0+0=00+0=00</think>0065<end>"
    assert Problem("-", (12, 307)).render(FORMATS["padded-scratchpad"], width=3) == \
        "012-307=<think>2-7-0=-05 1-0-1=+00 0-3-0=-03 307-012 7-2-0=+05 0-1-0=-01 3-0-1=+02</think>-295<end>"
    assert Problem("-", (307, 12)).render(FORMATS["padded-scratchpad"], width=3) == \
        "307-012=<think>7-2-0=+05 0-1-0=-01 3-0-1=+02</think>295<end>"
    assert Problem("-", (5, 5)).render(FORMATS["padded-scratchpad"], width=2) == "05-05=<think>5-5-0=+00 0-0-0=+00</think>00<end>"
    assert Problem("*", (12, 4)).render(FORMATS["padded-scratchpad"], width=2) == \
        "12*04=<think>12*4=048 12*0=000 0048+0000=0048</think>0048<end>"


@pytest.mark.parametrize("operator, operands, carries", [
    ("+", (0, 0), 0), ("+", (5, 5), 1), ("+", (99, 1), 2), ("+", (999, 999), 3), ("+", (123, 456), 0),
    ("+", (15, 85), 2), ("+", (9, 9, 9), 1), ("-", (100, 99), 2), ("-", (99, 100), 2), ("-", (57, 23), 0),
    ("*", (99, 99), None), ("-", (9, 1, 1), None)])
def test_num_carries(operator, operands, carries):
    assert num_carries(Problem(operator, operands)) == carries


def test_prompts_that_are_not_problems_are_refused():
    for prompt in ["12=", "+3=", "1+x=", "1++2="]:
        with pytest.raises(ValueError, match="expected a prompt"):
            parse_prompt(prompt)
    assert parse_prompt("0012*0300=", FORMATS["padded"]) == Problem("*", (12, 300))
    assert parse_prompt("21+003=", FORMATS["reversed-all"]) == Problem("+", (12, 300))


def test_answer_places_of_odd_predictions():
    assert answer_places("8470", PLAIN) == "0748"  # too long: lined up from the units
    assert answer_places("-469", PLAIN) == answer_places("469", PLAIN) == "964"  # the sign is scored by exact match
    assert answer_places("<think>2+7=9 1=1</think>19", FORMATS["scratchpad"]) == "91"
    assert answer_places("<think>2+7=9 1=1", FORMATS["scratchpad"]) == ""  # cut off before </think>: no digits
    assert answer_places("", FORMATS["padded-reversed"]) == ""
