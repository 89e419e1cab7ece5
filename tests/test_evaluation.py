"""Metrics on a known case: a model that answers from a fixed table, some answers deliberately wrong; edge cases;
plots and the report."""

import logging

import pytest
import torch

from math_llm.data import ArithmeticDataset
from math_llm.edge_cases import edge_case_datasets, edge_cases
from math_llm.evaluation import length_bands, length_table, log_report, scalar_metrics
from math_llm.formats import FORMATS
from math_llm.metrics import split_metrics
from math_llm.model import ModelConfig, Transformer
from math_llm.operations import nines
from math_llm.plots import save_grid_heatmap, save_length_plot
from math_llm.problems import Problem, split_example
from math_llm.runtime import select_precision
from math_llm.tokenizer import Tokenizer, vocab_for
from tests.helpers import num_carries



CPU = torch.device("cpu")


class TableModel(torch.nn.Module):
    """Predicts, at every position, the next character of the answer its table holds for the prompt."""

    def __init__(self, tokenizer, answers, max_length=32):
        super().__init__()
        self.tokenizer, self.answers = tokenizer, answers
        self.config = ModelConfig(vocab_size=len(tokenizer), max_length=max_length)
        self.max_tokens = max_length

    def forward(self, idx, targets=None, cache=None):
        if cache is None:
            return self.table_logits(idx), None
        # Greedy decoding feeds only the new tokens: this model keeps the earlier ones itself, in the cache object.
        new_length = idx.shape[1]
        idx = torch.cat([cache.seen_ids, idx], dim=1) if cache.length else idx
        cache.seen_ids, cache.length = idx, idx.shape[1]
        return self.table_logits(idx)[:, -new_length:], None

    def table_logits(self, idx):
        logits = torch.zeros(*idx.shape, len(self.tokenizer))
        for row, ids in enumerate(idx.tolist()):
            for position in range(len(ids)):
                prefix = self.tokenizer.decode(ids[: position + 1])
                prompt, equals, written = prefix.partition("=")
                if not equals:
                    continue
                full = self.tokenizer.encode(self.answers[prompt + "="] + "<end>")
                done = len(self.tokenizer.encode(written)) if written else 0
                logits[row, position, full[min(done, len(full) - 1)]] = 1.0
        return logits


def test_metrics_on_a_known_case():
    tokenizer = Tokenizer()
    examples = ["1+2=3<end>", "4+5=9<end>", "12+34=46<end>", "50+50=100<end>", "7+13=20<end>"]
    # two wrong answers: one digit off ("47"), and one too short ("10" for "100")
    answers = {"1+2=": "3", "4+5=": "9", "12+34=": "47", "50+50=": "10", "7+13=": "20"}
    dataset = ArithmeticDataset(examples, tokenizer)
    results = split_metrics(TableModel(tokenizer, answers), dataset, tokenizer, batch_size=2,
                       device=torch.device("cpu"), precision=select_precision(torch.device("cpu")))
    assert results["exact_match"] == pytest.approx(3 / 5)
    # answer tokens (with <end>): 2 + 2 + 3 + 4 + 3 = 14; wrong: "7" of 47, and "<end>" where "0" was due
    assert results["token_accuracy"] == pytest.approx(12 / 14)
    assert results["exact_match_by_operand_digits"] == {
        "1x1": {"exact_match": 1.0, "count": 2},
        "1x2": {"exact_match": 1.0, "count": 1},
        "2x2": {"exact_match": 0.0, "count": 2},
    }
    assert results["mistakes"] == [{"prompt": "12+34=", "expected": "46", "predicted": "47"},
                                   {"prompt": "50+50=", "expected": "100", "predicted": "10"}]
    # answer digits by place, units first: 47 for 46 misses the units; 10 for 100 (read 0, 1) misses the tens and
    # the hundreds it does not write
    assert results["digit_accuracy_by_place"] == {"+": {"0": {"accuracy": 4 / 5, "count": 5},
                                                        "1": {"accuracy": pytest.approx(2 / 3), "count": 3},
                                                        "2": {"accuracy": 0.0, "count": 1}}}


def test_breakdown_by_operation_cell_carries_and_scratchpad_steps():
    problems = [Problem("+", (58, 67)), Problem("+", (3, 4)), Problem("-", (12, 307)), Problem("*", (12, 34))]
    examples = [problem.render(FORMATS["scratchpad"]) for problem in problems]
    tokenizer = Tokenizer(vocab_for(examples))
    answers = {prompt: answer for prompt, answer in map(split_example, examples)}
    answers["58+67="] = answers["58+67="].replace("5+6+1=12", "5+6+1=11")  # a wrong step, a right answer
    answers["12*34="] = answers["12*34="][:-1] + "9"  # right steps, a wrong answer
    dataset = ArithmeticDataset(examples, tokenizer, metadata={"format": "scratchpad"})
    results = split_metrics(TableModel(tokenizer, answers, max_length=64), dataset, tokenizer, batch_size=3,
                       device=CPU, precision=select_precision(CPU))
    assert results["exact_match"] == 0.75  # the final answer decides, not the steps
    assert results["exact_match_by_operation"] == {"*": {"exact_match": 0.0, "count": 1},
                                                   "+": {"exact_match": 1.0, "count": 2},
                                                   "-": {"exact_match": 1.0, "count": 1}}
    assert results["exact_match_by_operation_and_operand_digits"]["+"] == {
        "1x1": {"exact_match": 1.0, "count": 1}, "2x2": {"exact_match": 1.0, "count": 1}}
    assert results["exact_match_by_carries"] == {"+": {"0": {"exact_match": 1.0, "count": 1},
                                                       "2": {"exact_match": 1.0, "count": 1}},
                                                 "-": {"1": {"exact_match": 1.0, "count": 1}}}
    assert results["worst_cells"] == [{"operation": "*", "operand_digits": "2x2", "exact_match": 0.0, "count": 1}]
    # steps: 58+67 has 2 (one wrong), 3+4 has 1, 12-307 has 4, 12*34 has 3: 9 of 10 right, 3 of 4 problems
    assert results["scratchpad"] == {"steps_exact_match": 0.75, "step_accuracy": 0.9}
    # the final answer's digits, not the steps': 409 for 408 misses the units only
    assert results["digit_accuracy_by_place"]["*"] == {"0": {"accuracy": 0.0, "count": 1},
                                                       "1": {"accuracy": 1.0, "count": 1},
                                                       "2": {"accuracy": 1.0, "count": 1}}
    metrics = scalar_metrics(results | {"edge_cases": {"exact_match": 1.0, "by_kind": {}}}, "val")
    assert metrics["val/exact_match/*"] == 0.0 and metrics["val/by_digits/+/2x2"] == 1.0
    assert metrics["val/by_carries/-/1"] == 1.0 and metrics["val/scratchpad/step_accuracy"] == 0.9
    assert metrics["val/digit_accuracy/*/0"] == 0.0 and metrics["val/digit_accuracy/*/2"] == 1.0


def test_digit_places_of_reversed_and_padded_answers():
    """Reversed answers are read from the front, a sign is not a digit, and padding zeros are places."""
    problems = [Problem("-", (12, 307)), Problem("-", (307, 12)), Problem("*", (12, 34))]
    examples = [problem.render(FORMATS["padded-reversed-all"], 3) for problem in problems]  # =-592 =592 =804000
    tokenizer = Tokenizer(vocab_for(examples))
    answers = {prompt: answer for prompt, answer in map(split_example, examples)}
    answers["210-703="] = "-599"  # the hundreds digit wrong: 995 for 295
    answers["210*430="] = "80400"  # one padding zero short
    dataset = ArithmeticDataset(examples, tokenizer, metadata={"format": "padded-reversed-all"})
    results = split_metrics(TableModel(tokenizer, answers), dataset, tokenizer, batch_size=3, device=CPU,
                       precision=select_precision(CPU))
    places = results["digit_accuracy_by_place"]
    assert places["-"] == {"0": {"accuracy": 1.0, "count": 2}, "1": {"accuracy": 1.0, "count": 2},
                           "2": {"accuracy": 0.5, "count": 2}}
    assert [places["*"][str(place)]["accuracy"] for place in range(6)] == [1, 1, 1, 1, 1, 0]


@pytest.mark.parametrize("data_format", ["plain", "padded-reversed-all", "padded-scratchpad"])
def test_sign_accuracy_of_subtraction_counts_right_signs_of_final_answers(data_format, caplog):
    problems = [Problem("-", (12, 307)), Problem("-", (307, 12)), Problem("-", (5, 9)), Problem("-", (40, 3)),
                Problem("-", (3, 80)), Problem("-", (9, 2)), Problem("-", (8, 1)), Problem("+", (3, 4))]
    examples = [problem.render(FORMATS[data_format], 3) for problem in problems]
    tokenizer = Tokenizer(vocab_for(examples))
    answers = {prompt: answer for prompt, answer in map(split_example, examples)}
    prompts = list(answers)
    # 12-307 and 307-12 answered with each other's answer (+295 and -295: wrong signs); 40-3 with 36 (right sign);
    # 8-1 with no answer at all
    answers[prompts[0]], answers[prompts[1]] = answers[prompts[1]], answers[prompts[0]]
    answers[prompts[3]] = Problem("-", (40, 4)).answer_text(FORMATS[data_format], 3)
    answers[prompts[6]] = answers[prompts[6]].partition("</think>")[0] if "scratchpad" in data_format else ""  # none
    dataset = ArithmeticDataset(examples, tokenizer, metadata={"format": data_format})
    results = split_metrics(TableModel(tokenizer, answers, max_length=128), dataset, tokenizer, batch_size=8, device=CPU,
                       precision=select_precision(CPU))
    assert results["exact_match_by_operation"]["-"] == {"exact_match": 3 / 7, "count": 7}
    assert results["sign_accuracy_by_operation"] == {"-": {"accuracy": 4 / 7, "count": 7}}  # + has no sign
    assert scalar_metrics(results, "test")["test/sign_accuracy/-"] == 4 / 7
    caplog.set_level(logging.INFO)
    log_report(results, logging.getLogger("test"), "test")
    assert "test -: exact match 0.4286 (7 problems) | sign right 0.5714 (3 of 4 mistakes)" in caplog.text


def test_edge_cases_hold_what_their_names_promise():
    cases = edge_cases(["+", "-", "*"], max_digits=4, max_operands=3)
    assert Problem("+", (9999, 9999)) in cases["all nines"] and Problem("*", (999, 9)) in cases["all nines"]
    assert Problem("+", (9999, 9999, 9999)) in cases["all nines"]
    assert Problem("+", (999, 1)) in cases["carry through every digit"]
    assert Problem("-", (1000, 1)) in cases["carry through every digit"]
    for problem in cases["carry through every digit"]:
        if problem.operand_digits[0] == problem.operand_digits[1]:  # every column carries (borrows, but the first)
            assert num_carries(problem) == problem.operand_digits[0] - (problem.operator == "-")
    assert all(0 in problem.operands for problem in cases["zero operand"])
    assert all(problem.result == 0 for problem in cases["zero result"])


def test_edge_cases_follow_the_datasets_format_width_and_max_length():
    padded = FORMATS["padded-reversed"]
    examples = [Problem("+", (12, 7)).render(padded, 3), Problem("+", (5, 3)).render(padded, 3)]
    dataset = ArithmeticDataset(examples, Tokenizer(), metadata={"format": "padded-reversed"})
    cases = edge_case_datasets(dataset, Tokenizer())
    assert "999+999=8991<end>" in cases["all nines"].examples  # padded to the dataset's width of 3
    assert set(cases) == {"all nines", "carry through every digit", "zero operand"}
    # every case has 13 tokens: a model that reads 13 gets them all, one that reads 12 none
    fitting = edge_case_datasets(dataset, Tokenizer(), Transformer(ModelConfig("tiny", max_length=13)))
    assert {kind: len(cases_of_kind) for kind, cases_of_kind in fitting.items()} == {
        kind: len(cases_of_kind) for kind, cases_of_kind in cases.items()}
    assert edge_case_datasets(dataset, Tokenizer(), Transformer(ModelConfig("tiny", max_length=12))) == {}


def test_heatmap_is_a_png_with_a_panel_per_operation(tmp_path):
    grid = {"+": {"1x1": {"exact_match": 1.0, "count": 5}, "1x2": {"exact_match": 0.5, "count": 2}},
            "-": {"2x2": {"exact_match": 0.25, "count": 4}}}
    path = tmp_path / "heatmap.png"
    assert save_grid_heatmap(grid, path, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert not save_grid_heatmap({"+": {"1x1x1": {"exact_match": 1.0, "count": 1}}}, tmp_path / "none.png", "")


def test_edge_cases_of_a_long_range_keep_to_its_lengths():
    cases = edge_cases(["+", "-"], max_digits=40, max_operands=2, min_digits=11)
    problems = [problem for kind in cases.values() for problem in kind]
    assert all(11 <= digits <= 40 for problem in problems for digits in problem.operand_digits)
    assert "zero operand" not in cases  # 0 has one digit, outside the range
    assert Problem("+", (nines(40), nines(11))) in cases["all nines"]
    assert len({problem.digits_key for problem in problems}) == 3 * 30 - 2  # equal lengths and each against 11
    for problem in cases["carry through every digit"]:
        if problem.operand_digits[0] == problem.operand_digits[1]:
            assert num_carries(problem) == problem.operand_digits[0] - (problem.operator == "-")


def test_exact_match_by_length_bands_and_plot(tmp_path):
    by_length = {str(n): {"exact_match": 1.0 if n <= 12 else 0.5, "count": 10 if n <= 12 else 30}
                 for n in range(9, 23)}
    assert length_bands(by_length, 10) == {"1-10": 1.0, "11-20": (20 + 0.5 * 240) / 260, "21-30": 0.5}
    assert length_table(by_length, per_line=10)[1] == "exact match (%) by length 19:50.0 20:50.0 21:50.0 22:50.0"
    path = tmp_path / "lengths.png"
    save_length_plot({"abacus": by_length, "learned": by_length}, path, "test", trained_lengths=(1, 10))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_edge_cases_keep_to_same_length_data_and_to_an_abacus_models_places():
    same = edge_cases(["+"], max_digits=5, max_operands=2, min_digits=2, same_length=True)
    assert {problem.operand_digits[0] == problem.operand_digits[1] for kind in same.values() for problem in kind} \
        == {True}
    reversed_all = FORMATS["reversed-all"]
    examples = [Problem("+", (12345, 54321)).render(reversed_all), Problem("+", (7, 8)).render(reversed_all)]
    dataset = ArithmeticDataset(examples, Tokenizer(), metadata={"format": "reversed-all"})
    model = Transformer(ModelConfig("tiny", pos_encoding="abacus", digit_positions=7, **Tokenizer().digit_place_ids()))
    readable = edge_case_datasets(dataset, Tokenizer(), model)  # 5+5 digits reach place 7
    assert "99999+99999=899991<end>" not in readable["all nines"].examples
    assert "9999+9999=89991<end>" in readable["all nines"].examples  # place 6: fits


def test_division_has_edge_cases_of_its_own_and_none_with_a_zero_divisor():
    cases = edge_cases(["/"], max_digits=3, max_operands=2)
    problems = [problem for kind in cases.values() for problem in kind]
    assert all(problem.operands[1] != 0 for problem in problems)
    assert Problem("/", (999, 99)) in cases["all nines"] and "carry through every digit" not in cases
    assert all(problem.result == 0 for problem in cases["zero result"]) and len(cases["zero result"]) == 3
    assert all(problem.operands[0] == 0 for problem in cases["zero operand"])
