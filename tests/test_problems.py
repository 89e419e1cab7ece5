"""Single problems in every format and operation: the text written, the prompt read back, carries and the
scratchpad's steps. A wrong answer, a wrong reversal or a wrong step fails here."""

import random
import re

import pytest

from src.problems import (FORMATS, Problem, answer_places, answer_width, final_answer, is_padded, is_pairwise,
                          is_scratchpad, multiplication_running_sums, num_carries, parse_prompt, scratchpad_steps,
                          split_example, written_steps)


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
        assert Problem(operator, (a, b)).render(data_format, width=4) == expected + "<end>"


def test_the_scratchpad_writes_the_issues_example():
    assert Problem("+", (658, 189)).render("scratchpad") == \
        "658+189=<think>8+9=17 5+8+1=14 6+1+1=8</think>847<end>"


def test_more_operands_and_the_seeds_format():
    assert Problem("+", (12, 7, 30)).render() == "12+7+30=49<end>"
    assert Problem("-", (5, 3, 9)).render() == "5-3-9=-7<end>"
    assert Problem("+", (58, 67)).render() == "58+67=125<end>"


@pytest.mark.parametrize("operator, operands, width, digits", [
    ("+", 2, 3, 4), ("+", 12, 3, 5), ("-", 2, 3, 3), ("-", 3, 3, 4), ("*", 2, 3, 6), ("*", 3, 2, 6)])
def test_padded_answers_have_room_for_the_largest_result(operator, operands, width, digits):
    assert answer_width(operator, operands, width) == digits


@pytest.mark.parametrize("data_format", list(FORMATS))
@pytest.mark.parametrize("operator", ["+", "-", "*"])
def test_random_problems_read_back_and_their_answers_decode_to_the_result(data_format, operator):
    rng = random.Random(0)
    for _ in range(300):
        num_operands = 2 if is_scratchpad(data_format) and operator != "+" else rng.randint(2, 4)
        problem = Problem(operator, tuple(rng.randrange(10 ** rng.randint(1, 5)) for _ in range(num_operands)))
        prompt, answer = split_example(problem.render(data_format, width=5))
        assert parse_prompt(prompt, data_format) == problem
        places = answer_places(answer, data_format)  # units first, in every format
        assert int(places[::-1]) == abs(problem.result)
        answer = final_answer(answer)
        sign, digits = ("-", answer[1:]) if answer.startswith("-") else ("", answer)
        if "reversed" in data_format:
            digits = digits[::-1]
        assert int(sign + digits) == problem.result
        if is_padded(data_format):
            assert len(digits) == answer_width(operator, num_operands, 5)
        elif data_format.startswith("aligned"):
            longest = max(problem.operand_digits)
            assert {len(operand) for operand in prompt[:-1].split(operator)} == {longest}
            assert len(digits) == answer_width(operator, num_operands, longest)
        else:
            assert digits == str(abs(problem.result))


SCRATCHPAD_FORMATS = [name for name in FORMATS if is_scratchpad(name)]


@pytest.mark.parametrize("data_format", SCRATCHPAD_FORMATS)
@pytest.mark.parametrize("operator", ["+", "-", "*"])
def test_every_scratchpad_step_is_a_true_equation(operator, data_format):
    """Each step 'x+y+c=s' (or a partial product, or the ordering step of a subtraction) holds, and the answer is
    right: the steps cannot be arithmetic nonsense that happens to end in the right result. A pairwise step is a
    chain 'x+y=s+c=t' of two-term sums; padded steps have one shape (subtraction two, by sign): a step for every
    column of the padded operands, and the same length in every problem."""
    rng = random.Random(1)
    pairwise, width = is_pairwise(data_format), 6 if is_padded(data_format) else None
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
    assert Problem("+", (99,) * 12).render("padded-scratchpad", width=2).endswith("</think>1188<end>")


def test_scratchpad_columns_carry_and_borrow():
    assert scratchpad_steps(Problem("+", (99, 1))) == ["9+1=10", "9+1=10"]
    assert scratchpad_steps(Problem("-", (100, 99))) == ["0-9=-9", "0-9-1=-10", "1-1=0"]
    assert scratchpad_steps(Problem("-", (12, 307))) == ["307-12", "7-2=5", "0-1=-1", "3-1=2"]
    assert scratchpad_steps(Problem("*", (12, 34))) == ["12*4=48", "12*3=36", "48+360=408"]
    with pytest.raises(ValueError, match="at most 2 operands"):
        scratchpad_steps(Problem("-", (1, 2, 3)))


def test_pairwise_and_padded_steps():
    assert Problem("+", (658, 189)).render("scratchpad-pairwise") == \
        "658+189=<think>8+9=17 5+8=13+1=14 6+1=7+1=8</think>847<end>"
    assert scratchpad_steps(Problem("+", (99, 99, 99)), pairwise=True) == ["9+9=18+9=27", "9+9=18+9=27+2=29"]
    assert scratchpad_steps(Problem("+", (8, 687)), pairwise=True) == ["8+7=15", "8+1=9", "6=6"]
    assert scratchpad_steps(Problem("-", (100, 99)), pairwise=True) == ["0-9=-9", "0-9=-9-1=-10", "1-1=0"]
    assert scratchpad_steps(Problem("-", (12, 307)), pairwise=True) == ["307-12", "7-2=5", "0-1=-1", "3-1=2"]
    # padded: the carry always written, every number at a fixed width
    assert Problem("+", (8, 687)).render("padded-scratchpad", width=3) == \
        "008+687=<think>8+7+0=15 0+8+1=09 0+6+0=06</think>0695<end>"
    assert Problem("+", (58, 7)).render("padded-scratchpad-pairwise", width=3) == \
        "058+007=<think>8+7=15+0=15 5+0=05+1=06 0+0=00+0=00</think>0065<end>"
    assert Problem("-", (12, 307)).render("padded-scratchpad", width=3) == \
        "012-307=<think>2-7-0=-05 1-0-1=+00 0-3-0=-03 307-012 7-2-0=+05 0-1-0=-01 3-0-1=+02</think>-295<end>"
    assert Problem("-", (307, 12)).render("padded-scratchpad", width=3) == \
        "307-012=<think>7-2-0=+05 0-1-0=-01 3-0-1=+02</think>295<end>"
    assert Problem("-", (5, 5)).render("padded-scratchpad", width=2) == "05-05=<think>5-5-0=+00 0-0-0=+00</think>00<end>"
    assert Problem("*", (12, 4)).render("padded-scratchpad", width=2) == \
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
    assert parse_prompt("0012*0300=", "padded") == Problem("*", (12, 300))
    assert parse_prompt("21+003=", "reversed-all") == Problem("+", (12, 300))


def test_running_sums_are_the_column_totals_of_long_multiplication():
    assert multiplication_running_sums(658, 189, 6) == [72, 116, 113, 64, 12, 1]  # 8*9, 5*9+8*8+7, ...
    rng = random.Random(0)
    for _ in range(2000):
        a, b = (rng.randrange(10 ** rng.randint(1, 6)) for _ in range(2))
        places = len(str(a * b)) + 1
        totals = multiplication_running_sums(a, b, places)
        carries_in = [0] + [total // 10 for total in totals[:-1]]
        # without the carries, place k's total is the sum of its digit products: over all places, a * b
        assert sum((total - carry) * 10 ** k for k, (total, carry) in enumerate(zip(totals, carries_in))) == a * b
        assert int("".join(str(total % 10) for total in reversed(totals))) == a * b  # last digits: the answer
        assert totals[-1] == 0  # nothing carried past the product's width


def test_answer_places_of_odd_predictions():
    assert answer_places("8470", "plain") == "0748"  # too long: lined up from the units
    assert answer_places("-469", "plain") == answer_places("469", "plain") == "964"  # the sign is scored by exact match
    assert answer_places("<think>2+7=9 1=1</think>19", "scratchpad") == "91"
    assert answer_places("<think>2+7=9 1=1", "scratchpad") == ""  # cut off before </think>: no answer digits
    assert answer_places("", "padded-reversed") == ""
