"""The running-sum probe: its targets sit at the right answer digits with the right column totals, its loss is its
squared error per answer token in one pass with the model's, it leaves the model's initialisation alone, and its
readout scores each place against its totals."""

import pytest
import torch

from math_llm.data import ArithmeticDataset
from math_llm.data_generation import DataConfig, generate_splits
from math_llm.errors import ConfigError
from math_llm.formats import FORMATS
from math_llm.model import IGNORE_INDEX, ModelConfig, Transformer
from math_llm.operations import multiplication_running_sums
from math_llm.probe import ProbedModel, RunningSumProbe, add_running_sums, running_sum_readout
from math_llm.problems import Problem, parse_prompt
from math_llm.runtime import select_precision
from math_llm.tokenizer import Tokenizer, vocab_for

CPU = torch.device("cpu")


def test_running_sums_are_the_column_totals_of_long_multiplication():
    assert multiplication_running_sums((658, 189), 6) == [72, 116, 113, 64, 12, 1]  # 8*9, 5*9+8*8+7, ...
    rng = torch.Generator().manual_seed(0)
    for _ in range(2000):
        a, b = (int(torch.randint(0, 10 ** int(torch.randint(1, 7, (), generator=rng)), (), generator=rng))
                for _ in range(2))
        places = len(str(a * b)) + 1
        totals = multiplication_running_sums((a, b), places)
        carries_in = [0] + [total // 10 for total in totals[:-1]]
        # without the carries, place k's total is the sum of its digit products: over all places, a * b
        assert sum((total - carry) * 10 ** k for k, (total, carry) in enumerate(zip(totals, carries_in))) == a * b
        assert int("".join(str(total % 10) for total in reversed(totals))) == a * b  # last digits: the answer
        assert totals[-1] == 0  # nothing carried past the product's width
    assert multiplication_running_sums((2, 3, 4), 3) is None  # only two operands have them


def test_the_probed_models_loss_adds_the_probes_squared_error_per_answer_token():
    torch.manual_seed(0)
    model = Transformer(ModelConfig("tiny", vocab_size=14, max_length=16))
    probe = RunningSumProbe(64)
    torch.nn.init.normal_(probe.linear.weight)  # it starts at zero
    probed = ProbedModel(model, probe, 0.5)
    inputs, targets = torch.randint(0, 14, (3, 10)), torch.randint(0, 14, (3, 10))
    targets[1, :4] = IGNORE_INDEX  # 26 answer tokens
    running_sums = torch.full((3, 10), float("nan"))
    running_sums[0, 4:8] = torch.tensor([72.0, 116.0, 113.0, 64.0])
    running_sums[2, 9] = 3.0
    hidden = []
    model.ln_final.register_forward_hook(lambda module, args, output: hidden.append(args[0]))
    _, cross_entropy = model(inputs, targets)
    _, loss = probed(inputs, targets, running_sums)
    has_sum = running_sums.isfinite()
    probe_reading = probe.linear(hidden[-1]).squeeze(-1)
    expected_error = (probe_reading[has_sum] - running_sums[has_sum] / 10).square().sum() / 26
    torch.testing.assert_close(loss, cross_entropy + 0.5 * expected_error)
    with torch.autocast("cpu", torch.bfloat16):  # the probe reads in fp32 all the same
        _, cross_entropy = model(inputs, targets)
        _, loss = probed(inputs, targets, running_sums)
    probe_reading = probe.linear(hidden[-1].float()).squeeze(-1)
    expected_error = (probe_reading[has_sum] - running_sums[has_sum] / 10).square().sum() / 26
    torch.testing.assert_close(loss - cross_entropy, 0.5 * expected_error, rtol=1e-5, atol=1e-5)
    _, without_sums = probed(inputs, targets, torch.full((3, 10), float("nan")))
    without_sums.backward()  # the probe is in the graph even without sums (DDP needs a gradient for it)
    assert torch.count_nonzero(probe.linear.weight.grad) == 0
    assert [p.shape for p in probed.parameters()][-2:] == [(1, 64), (1,)]  # the model's parameters, then the probe's


def test_the_probe_leaves_the_models_initialisation_as_it_was():
    torch.manual_seed(0)
    plain = Transformer(ModelConfig("tiny", vocab_size=14, max_length=16)).state_dict()
    after_plain = torch.rand(1)
    torch.manual_seed(0)
    probed = Transformer(ModelConfig("tiny", vocab_size=14, max_length=16)).state_dict()
    probe = RunningSumProbe(64)
    assert torch.equal(torch.rand(1), after_plain)  # the random stream goes on where it would without the probe
    assert all(torch.equal(plain[name], probed[name]) for name in plain)
    assert not probe.linear.weight.any() and not probe.linear.bias.any()


@pytest.mark.parametrize("data_format", [name for name, fmt in FORMATS.items() if not fmt.scratchpad])
def test_running_sums_sit_at_the_answer_digits_of_two_operand_multiplications_only(data_format):
    examples = generate_splits(DataConfig(num_examples=300, max_digits=3, operations="+,*", max_operands=3,
                                          format=data_format, seed=5))["train"]
    tokenizer = Tokenizer(vocab_for(examples))
    dataset = ArithmeticDataset(examples, tokenizer, metadata={"format": data_format})
    two_operand_products = [prompt.count("*") == 1 for prompt in dataset.prompts]
    assert add_running_sums(dataset) == sum(two_operand_products) > 0
    assert any(prompt.count("*") == 2 for prompt in dataset.prompts)  # a*b*c: skipped
    running_sums = dataset.extra_targets["running_sums"]
    for row, (prompt, answer) in enumerate(zip(dataset.prompts, dataset.answers)):
        has_sum = running_sums[row].isfinite()
        if not two_operand_products[row]:
            assert not has_sum.any()
            continue
        start = len(prompt)
        assert has_sum.nonzero().flatten().tolist() == list(range(start, start + len(answer)))
        sums = running_sums[row, start:start + len(answer)].long().tolist()
        totals = multiplication_running_sums(parse_prompt(prompt, FORMATS[data_format]).operands, len(answer))
        assert sums == (totals if FORMATS[data_format].reverse_answer else totals[::-1])  # place k at digit k
        assert "".join(str(total % 10) for total in sums) == answer  # each total ends in its digit
    inputs, targets, extra = dataset.batch(torch.arange(len(dataset)))
    is_digit_target = (targets >= 0) & (targets != tokenizer.end_id)  # answer tokens other than <end>
    assert torch.equal(extra["running_sums"].isfinite(), is_digit_target & torch.tensor(two_operand_products)[:, None])


def test_data_without_two_operand_multiplication_gets_no_running_sums():
    examples = generate_splits(DataConfig(num_examples=50, operations="+,-", seed=5))["train"]
    dataset = ArithmeticDataset(examples, Tokenizer(vocab_for(examples)))
    assert add_running_sums(dataset) == 0 and dataset.extra_targets == {}
    assert dataset.batch(torch.arange(4))[2] == {}


def test_running_sums_of_a_scratchpad_format_are_a_config_error():
    examples = generate_splits(DataConfig(num_examples=50, operations="*", format="scratchpad", seed=5))["train"]
    dataset = ArithmeticDataset(examples, Tokenizer(vocab_for(examples)), source="x/train.json",
                                metadata={"format": "scratchpad"})
    with pytest.raises(ConfigError, match="x/train.json: the running-sum loss reads answers written without a "
                                          "scratchpad"):
        add_running_sums(dataset)


@pytest.mark.parametrize("data_format", ["plain", "padded-reversed-all"])
def test_running_sum_readout_scores_each_place_against_its_column_total(data_format):
    """A probe that reads 23 everywhere: its error at each place is the distance of that place's totals from 23,
    whichever order the format writes the digits in; + problems have no totals."""
    problems = [Problem("*", (658, 189)), Problem("*", (47, 305)), Problem("+", (12, 34))]
    examples = [problem.render(FORMATS[data_format], 3) for problem in problems]
    tokenizer = Tokenizer(vocab_for(examples))
    dataset = ArithmeticDataset(examples, tokenizer, metadata={"format": data_format})
    assert add_running_sums(dataset) == 2
    model = Transformer(ModelConfig("tiny", vocab_size=len(tokenizer), max_length=32))
    probe = RunningSumProbe(64)
    torch.nn.init.constant_(probe.linear.bias, 2.3)  # in tens
    readout = running_sum_readout(model, probe, dataset, batch_size=2, device=CPU, precision=select_precision(CPU))
    totals = [multiplication_running_sums(problem.operands, 6) for problem in problems[:2]]
    if data_format == "plain":  # 47*305 = 14335 has five digits: its sixth total is not written
        totals[1] = totals[1][:5]
    for place, reading in readout.items():
        at_place = [sums[int(place)] for sums in totals if int(place) < len(sums)]
        assert reading["count"] == len(at_place)
        assert reading["rmse"] == pytest.approx((sum((23 - t) ** 2 for t in at_place) / len(at_place)) ** 0.5)
        assert reading["read_right"] == sum(t == 23 for t in at_place) / len(at_place)
    assert len(readout) == 6 and readout["1"]["read_right"] == 0.5  # 47*305: 23 at places 1 and 2
