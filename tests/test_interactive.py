"""interactive.py as a person uses it: a problem typed in normal digit order becomes the model's prompt in every
format, the model's raw answer is read back in normal order and judged, what lies outside the training data or past
the decoding budget is said, and the script runs until quit."""

import itertools
import os
import pty
import select
import signal
import sys
import time

import pytest
import torch

from math_llm.checkpoint import save_best_model
from math_llm.decoding import complete
from math_llm.formats import FORMATS
from math_llm.model import ModelConfig, Transformer
from math_llm.problems import Problem, read_answer, read_written_problem, scratchpad_refusal, split_example
from math_llm.tokenizer import DEFAULT_VOCAB, EXTRA_TOKENS, Tokenizer
from math_llm.trained_model import TrainedModel
from math_llm.trainer import TrainConfig
from scripts.interactive import reply
from tests.helpers import REPO_ROOT, check_slow_test, run_script, script_env

CPU = torch.device("cpu")
ADDITION_DATA = {"min_digits": 1, "max_digits": 2, "operations": "+", "max_operands": 2}
EVERY_OPERATION_DATA = {"min_digits": 1, "max_digits": 2, "operations": "add,sub,mul,div", "max_operands": 2}


def trained_on(format_name, operand_width=None, data_config=ADDITION_DATA, max_length=24, vocab=DEFAULT_VOCAB):
    """An untrained tiny model as a checkpoint would give it back."""
    torch.manual_seed(0)
    tokenizer = Tokenizer(vocab)
    model = Transformer(ModelConfig("tiny", vocab_size=len(tokenizer), max_length=max_length)).eval()
    return TrainedModel(model, tokenizer, FORMATS[format_name], operand_width, data_config)


def writing(trained, text, ends=True):
    """`trained` with its model made to write `text` after any prompt, then <end> (or, without `ends`, the last
    token of `text` for ever): the real decoding loop around logits chosen by the test."""
    tokens = trained.tokenizer.encode(text) + ([trained.tokenizer.end_id] if ends else [])
    calls = itertools.count()

    def scripted_logits(module, inputs, output):
        logits, loss = output
        chosen = torch.zeros_like(logits)
        chosen[..., tokens[min(next(calls), len(tokens) - 1)]] = 1.0
        return chosen, loss

    trained.model.register_forward_hook(scripted_logits)
    return trained


# 12+7 in each format, fixed-width formats padded to 3 digits
PROMPTS_OF_12_PLUS_7 = {
    "plain": "12+7=", "reversed": "12+7=", "padded": "012+007=", "padded-reversed": "012+007=",
    "reversed-all": "21+7=", "padded-reversed-all": "210+700=", "aligned-reversed-all": "21+70=",
    "scratchpad": "12+7=", "scratchpad-pairwise": "12+7=", "padded-scratchpad": "012+007=",
    "padded-scratchpad-pairwise": "012+007=",
}


@pytest.mark.parametrize("format_name", FORMATS)
def test_a_written_problem_becomes_the_models_prompt_in_every_format(format_name):
    trained = trained_on(format_name, 3 if FORMATS[format_name].fixed_width else None)
    for typed in ("12+7", "12+7=", " 12 + 7 = "):
        assert trained.prompt_for(read_written_problem(typed)) == PROMPTS_OF_12_PLUS_7[format_name]


def test_several_operands_and_every_operation_are_read():
    assert read_written_problem("1+2+3") == Problem("+", (1, 2, 3))
    assert trained_on("reversed-all").prompt_for(read_written_problem("12-307")) == "21-703="
    assert trained_on("padded-reversed", 2).prompt_for(read_written_problem("17 / 5")) == "17/05="
    assert trained_on("aligned-reversed-all").prompt_for(read_written_problem("1+2+30")) == "10+20+03="


def test_the_start_of_a_problem_or_other_text_is_refused():
    for text in ("7+", "12+34=46", "-3+4", "twelve", "12+-3"):
        with pytest.raises(ValueError, match="expected a whole problem such as 12\\+34"):
            read_written_problem(text)
    with pytest.raises(ValueError, match="5/0: div takes no 0 as operand 2"):
        read_written_problem("5/0")


def test_operands_wider_than_the_learned_width_cannot_be_read():
    with pytest.raises(ValueError, match="this model reads operands of at most 2 digits, zero-padded to 2, and 123 "
                                         "has 3"):
        trained_on("padded-reversed", 2).prompt_for(read_written_problem("123+4"))
    assert trained_on("aligned-reversed-all").prompt_for(read_written_problem("123+4")) == "321+400="
    assert trained_on("reversed-all").prompt_for(read_written_problem("123+4")) == "321+4="


@pytest.mark.parametrize("format_name", FORMATS)
def test_every_formats_answer_is_read_back_as_its_numbers(format_name):
    data_format = FORMATS[format_name]
    for problem in (Problem("+", (12, 34)), Problem("-", (5, 12)), Problem("/", (17, 5)), Problem("+", (9, 9, 9))):
        if scratchpad_refusal(data_format, problem.operation, len(problem.operands)):
            continue
        _, answer = split_example(problem.render(data_format, 2))
        assert read_answer(answer, data_format) == problem.answer_numbers, answer


def test_raw_answers_read_back_in_normal_order():
    for answer, format_name, numbers in [
            ("640", "padded-reversed", (46,)), ("046", "padded", (46,)), ("-70", "reversed", (-7,)),
            ("-07", "padded", (-7,)), ("3r2", "plain", (3, 2)), ("30r20", "padded-reversed-all", (3, 2)),
            ("<think>2+4=6 1+3=4</think>46", "scratchpad", (46,)),
            ("<think>2+4+0=06 1+3+0=04</think>046", "padded-scratchpad", (46,)),
            ("<think>2+4=6", "scratchpad", None), ("4+6", "plain", None), ("", "plain", None), ("3r", "plain", None)]:
        assert read_answer(answer, FORMATS[format_name]) == numbers, answer


def test_problems_outside_the_training_data_are_named():
    trained = trained_on("plain")
    assert trained.outside_training(read_written_problem("12+34")) == []
    assert trained.outside_training(read_written_problem("123+4")) == ["123 has 3 digits (trained: 1 to 2)"]
    assert trained.outside_training(read_written_problem("1*2*3")) == ["operation * (trained: +)",
                                                                       "3 operands (trained: at most 2)"]
    assert trained_on("plain", data_config=EVERY_OPERATION_DATA).outside_training(read_written_problem("5-12")) == []
    assert trained_on("plain", data_config={}).outside_training(read_written_problem("1234*5*6")) == []


def test_complete_says_whether_the_end_token_came():
    assert complete(writing(trained_on("padded-reversed", 2), "640"), "12+34=", CPU) == ("640", True)
    assert complete(writing(trained_on("padded-reversed", 2), ""), "12+34=", CPU) == ("", True)
    # max_length 24 leaves 18 tokens after the 6 of the prompt, and the model never writes <end>
    assert complete(writing(trained_on("padded-reversed", 2), "5", ends=False), "12+34=", CPU) == ("5" * 18, False)


def test_a_reply_shows_the_answer_in_normal_order_and_whether_it_is_right():
    def replies(format_name, width, written, typed, show_raw=False):
        trained = writing(trained_on(format_name, width, EVERY_OPERATION_DATA, vocab=DEFAULT_VOCAB + EXTRA_TOKENS),
                          written)
        return reply(trained, typed, CPU, show_raw)

    assert replies("padded-reversed", 2, "640", "12+34") == ["12+34 = 46  right"]
    assert replies("padded-reversed", 2, "640", "12 + 34 =", show_raw=True) == ["12+34 = 46  right",
                                                                               "  12+34= -> 640<end>"]
    assert replies("padded-reversed", 2, "740", "12+34") == ["12+34 = 47  wrong, expected 46"]
    assert replies("reversed-all", None, "-70", "5-12") == ["5-12 = -7  right"]
    assert replies("padded", 2, "03r02", "17/5") == ["17/5 = 3r2  right"]
    assert replies("scratchpad", None, "<think>2+4=6 1+3=4</think>46", "12+34") == ["12+34 = 46  right"]
    assert replies("plain", None, "4+6", "12+34") == ["12+34 = ?  wrong, expected 46: the model wrote '4+6', not a "
                                                      "number"]
    assert replies("padded-reversed", 2, "640", "7+") == ["cannot read it: expected a whole problem such as 12+34 "
                                                          "with one of the operators + - * /, got '7+'"]


def test_a_reply_warns_outside_training_and_when_the_answer_runs_out():
    never_ends = writing(trained_on("plain"), "5", ends=False)
    assert reply(never_ends, "123+4", CPU, show_raw=True) == [
        "warning: outside the training data: 123 has 3 digits (trained: 1 to 2)",
        "123+4 = ?  wrong, expected 127: the answer ran out of length before <end>",
        f"  123+4= -> {'5' * 18}"]
    assert reply(trained_on("plain"), "1*2", CPU) == [
        "warning: outside the training data: operation * (trained: +)",
        "the model cannot read it: unknown character '*' at position 1 in '1*2=' (vocabulary: 0 1 2 3 4 5 6 7 8 9 + = "
        "<end>)"]


@pytest.mark.slow
def test_the_script_answers_written_problems_until_quit(tmp_path):
    trained = trained_on("padded-reversed", 2, max_length=16)
    save_best_model(str(tmp_path / "best_model.pt"), TrainConfig(model=trained.model.config), trained, 0, "val", {})
    typed = ["12+34", ":raw", " 12 + 34 =", "7+", "123+4", "1*2", "1+2+3+4+5+6", "quit", "99+99"]
    result = run_script("interactive.py", "--checkpoint", tmp_path, "--device", "cpu", home=tmp_path,
                        input="\n".join(typed) + "\n")
    lines = [line.removeprefix("> ") for line in result.stdout.splitlines()]  # each reply follows the prompt "> "
    assert "trained on +, 2 operands of 1 to 2 digits, in the 'padded-reversed' format" in lines[0]
    answers = [line for line in lines if line.startswith("12+34 = ")]
    assert len(answers) == 2 and all("  right" in line or "  wrong, expected 46" in line for line in answers)
    assert "raw text on" in lines and any(line.startswith("  12+34= -> ") for line in lines)
    assert "cannot read it: expected a whole problem such as 12+34 with one of the operators + - * /, got '7+'" in lines
    assert "cannot read it: this model reads operands of at most 2 digits, zero-padded to 2, and 123 has 3" in lines
    assert "warning: outside the training data: operation * (trained: +)" in lines
    assert "warning: outside the training data: 6 operands (trained: at most 2)" in lines
    assert ("the model cannot read it: '01+02+03+04+05+06=' has 18 tokens, more than the max_length of 16 (train.py "
            "--max-length)") in lines
    assert not any("99+99" in line for line in lines)  # read after quit


def read_until(fd, marker, seen=b"", timeout=60):
    """What the terminal at `fd` shows until `marker` appears `seen.count(marker) + 1` times in all."""
    wanted, deadline = seen.count(marker) + 1, time.time() + timeout
    while seen.count(marker) < wanted:
        assert time.time() < deadline, f"{marker!r} did not appear in {seen!r}"
        if select.select([fd], [], [], 1)[0]:
            seen += os.read(fd, 4096)
    return seen


@pytest.mark.slow
def test_on_a_terminal_the_up_arrow_recalls_the_last_problem_and_history_is_kept(tmp_path):
    check_slow_test()
    trained = trained_on("padded-reversed", 2, max_length=16)
    save_best_model(str(tmp_path / "best_model.pt"), TrainConfig(model=trained.model.config), trained, 0, "val", {})
    pid, fd = pty.fork()
    if pid == 0:  # the child: the script on a terminal, HOME in tmp_path (its history file goes there)
        os.execve(sys.executable, [sys.executable, os.path.join(REPO_ROOT, "scripts", "interactive.py"),
                                   "--checkpoint", str(tmp_path), "--device", "cpu"], script_env(tmp_path))
    shown = read_until(fd, b"> ")
    os.write(fd, b"12+34\r")
    shown = read_until(fd, b"> ", shown)
    os.write(fd, b"\x1b[A\r")  # up arrow, enter: the same problem again
    shown = read_until(fd, b"> ", shown)
    os.write(fd, b"exit\r")
    deadline = time.time() + 30
    while os.waitpid(pid, os.WNOHANG) == (0, 0):  # still running
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"interactive.py did not end on exit: {shown!r}")
        time.sleep(0.05)
    assert shown.count(b"12+34 = ") == 2
    assert "12+34" in (tmp_path / ".math_llm_history").read_text().splitlines()
