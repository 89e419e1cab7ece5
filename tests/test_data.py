"""Datasets: generation (disjoint distinct splits, balanced or weighted operations, operand counts and lengths, every
sampling, numbers past int64, division's divisors), the JSON files, and the tokenised dataset."""

import json
import logging
from collections import Counter

import numpy as np
import pytest
import torch

from math_llm.data import ArithmeticDataset, read_split, write_splits
from math_llm.data_generation import (DataConfig, fill_quotas, generate_splits, sample_carry_balanced,
                                      weighted_quotas)
from math_llm.errors import ConfigError, DataError
from math_llm.formats import FORMATS
from math_llm.model import IGNORE_INDEX
from math_llm.operations import OPERATIONS
from math_llm.problems import Problem, parse_prompt, split_example
from math_llm.tokenizer import DEFAULT_VOCAB, Tokenizer, TokenizerError, vocab_for
from tests.helpers import num_carries



def test_fill_quotas_caps_small_bins_and_spreads_the_rest():
    assert fill_quotas(100, [10, 1000, 1000]) == [10, 45, 45]
    assert sum(fill_quotas(7, [5, 5, 5])) == 7


def test_splits_are_disjoint_distinct_and_sized():
    splits = generate_splits(DataConfig(num_examples=5000, max_digits=3, seed=1))
    assert [len(splits[s]) for s in ("train", "val", "test")] == [4000, 500, 500]
    everything = splits["train"] + splits["val"] + splits["test"]
    assert len(set(everything)) == len(everything)
    for text in everything:
        prompt, answer = split_example(text)
        a, b = map(int, prompt[:-1].split("+"))
        assert int(answer) == a + b


def test_operand_lengths_are_balanced():
    splits = generate_splits(DataConfig(num_examples=9000, max_digits=3, seed=1))
    counts = {}
    for text in splits["train"] + splits["val"] + splits["test"]:
        key = parse_prompt(split_example(text)[0]).operand_digits
        counts[key] = counts.get(key, 0) + 1
    # the small length pairs are taken whole (100 and 900 problems exist); the rest share the remainder evenly
    assert counts[(1, 1)] == 100 and counts[(1, 2)] == counts[(2, 1)] == 900
    balanced = [count for key, count in counts.items() if key not in {(1, 1), (1, 2), (2, 1)}]
    assert max(balanced) - min(balanced) <= 1


def test_small_space_is_capped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        splits = generate_splits(DataConfig(num_examples=10_000, max_digits=1))
    assert sum(map(len, splits.values())) == 100
    assert "only 100 distinct problems" in caplog.text


def test_generation_is_reproducible_from_the_seed():
    config = DataConfig(num_examples=500, max_digits=4, seed=7)
    assert generate_splits(config) == generate_splits(config)
    assert generate_splits(config) != generate_splits(DataConfig(num_examples=500, max_digits=4, seed=8))


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('{"examples": [\n"1+1=2<end>",\n"1+2=3<end>"\n"2+2=4<end>"\n]}')
    with pytest.raises(DataError, match=r"train.json line 4 column 1: malformed JSON"):
        read_split(str(path))


def test_unknown_character_in_data_names_file_and_line(tmp_path):
    data_dir = tmp_path / "data"
    write_splits(str(data_dir), {"train": ["1+1=2<end>", "2+2=4<end>", "3*3=9<end>"]}, DataConfig())
    path = str(data_dir / "train.json")
    with pytest.raises(DataError, match=r"train.json line 5: unknown character '\*' at position 1"):
        ArithmeticDataset.from_file(path, Tokenizer())


def test_written_files_record_their_config(tmp_path):
    config = DataConfig(num_examples=200, max_digits=2, seed=3)
    write_splits(str(tmp_path), generate_splits(config), config)
    metadata = json.loads((tmp_path / "val.json").read_text())["metadata"]
    assert metadata["split"] == "val" and metadata["max_digits"] == 2 and metadata["format"] == "plain"


def test_batch_targets_cover_only_answer_tokens_and_pad_to_longest_in_batch():
    tokenizer = Tokenizer()
    dataset = ArithmeticDataset(["1+2=3<end>", "12+34=46<end>", "5+5=10<end>"], tokenizer)
    inputs, targets, extra = dataset.batch(torch.tensor([0, 2]))
    assert extra == {} and inputs.shape == (2, 6)  # "5+5=10<end>" has 7 tokens: inputs drop the last
    assert tokenizer.decode(inputs[1]) == "5+5=10"
    # target j is token j+1; only the answer "10" and <end> are learned
    assert targets[1].tolist() == [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX] + tokenizer.encode("10<end>")
    assert targets[0].tolist() == [IGNORE_INDEX] * 3 + tokenizer.encode("3<end>") + [IGNORE_INDEX]


@pytest.mark.parametrize("content", ['"just a string"', "42", '{"examples": []}', '{"metadata": {}}'])
def test_data_file_without_a_list_of_examples_is_a_clear_error(tmp_path, content):
    path = tmp_path / "test.json"
    path.write_text(content)
    with pytest.raises(DataError, match="test.json: expected a non-empty list of examples"):
        read_split(str(path))


def test_data_file_that_is_not_text_is_a_clear_error(tmp_path):
    path = tmp_path / "test.json"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(DataError, match="test.json: cannot read it as UTF-8 text"):
        read_split(str(path))


def test_format_is_recorded_in_the_files_and_read_back(tmp_path):
    config = DataConfig(num_examples=50, format="padded-reversed")
    write_splits(str(tmp_path), generate_splits(config), config)
    dataset = ArithmeticDataset.from_file(str(tmp_path / "val.json"), Tokenizer())
    assert dataset.format == FORMATS["padded-reversed"]
    _, metadata, _ = read_split(str(tmp_path / "train.json"))
    assert metadata["format"] == "padded-reversed"


@pytest.mark.parametrize("value, shown", [('"roman"', "'roman'"), ('["plain"]', r"\['plain'\]")])
def test_unknown_format_in_a_data_file_is_a_clear_error(tmp_path, value, shown):
    path = tmp_path / "test.json"
    path.write_text('{"metadata": {"format": ' + value + '}, "examples": ["1+1=2<end>"]}')
    with pytest.raises(DataError, match=f"test.json: unknown data format {shown}"):
        read_split(str(path))


def test_padded_formats_know_their_operand_width():
    dataset = ArithmeticDataset(["012+007=0019<end>"], Tokenizer(), metadata={"format": "padded"})
    assert dataset.operand_width == 3
    assert ArithmeticDataset(["12+7=19<end>"], Tokenizer()).operand_width is None


def all_problems(splits, name="plain"):
    return [parse_prompt(split_example(text)[0], FORMATS[name]) for examples in splits.values() for text in examples]


def test_mixed_operations_are_equally_represented_right_and_disjoint():
    splits = generate_splits(DataConfig(num_examples=3000, max_digits=3, operations="+,-,*", format="padded-reversed"))
    everything = [text for examples in splits.values() for text in examples]
    assert len(set(everything)) == len(everything)
    problems = all_problems(splits, "padded-reversed")
    counts = Counter(problem.operator for problem in problems)
    assert counts == {"+": 1000, "-": 1000, "*": 1000}
    for text, problem in zip(everything, problems):
        answer = split_example(text)[1]
        assert int(answer[0] + answer[1:][::-1] if answer.startswith("-") else answer[::-1]) == problem.result
    assert any(problem.result < 0 for problem in problems)  # subtraction goes negative


def test_operation_weights_set_each_operations_share_in_the_order_of_operations():
    config = DataConfig(num_examples=4000, max_digits=3, operations="mul,add,-", operation_weights="2,1,1")
    counts = Counter(problem.operator for problem in all_problems(generate_splits(config)))
    assert counts == {"*": 2000, "+": 1000, "-": 1000}


def test_an_operation_weighted_past_what_exists_is_taken_whole_and_the_rest_goes_to_the_others():
    config = DataConfig(num_examples=150, max_digits=1, operations="+,*", operation_weights="1,3")
    counts = Counter(problem.operator for problem in all_problems(generate_splits(config)))
    assert counts == {"*": 100, "+": 50}  # 3/4 of 150 is more than the 100 one-digit products


def test_an_operation_that_its_weight_leaves_without_problems_is_a_warning(caplog):
    config = DataConfig(num_examples=100, operations="+,*", operation_weights="1e-9,1")
    splits = generate_splits(config)
    assert {problem.operator for problem in all_problems(splits)} == {"*"}
    assert "--operation-weights leave + without a single problem" in caplog.text


def test_operation_weights_split_an_operations_share_evenly_over_operand_counts():
    config = DataConfig(num_examples=6000, max_digits=2, operations="+,*", operation_weights="1,2", max_operands=3)
    counts = Counter((problem.operator, len(problem.operands)) for problem in all_problems(generate_splits(config)))
    assert counts == {("+", 2): 1000, ("+", 3): 1000, ("*", 2): 2000, ("*", 3): 2000}


def test_length_weighted_sampling_gives_each_length_pair_a_share_in_proportion_to_its_digit_products():
    config = DataConfig(num_examples=20_000, max_digits=4, operations="*", sampling="length-weighted", test_only=True)
    counts = Counter(problem.operand_digits for problem in all_problems(generate_splits(config)))
    assert counts[(1, 1)] == 100  # its share (1/100 of 20,000) is more than the 100 problems that exist: all of them
    unit = counts[(2, 2)] / 4
    for (a_digits, b_digits), count in counts.items():
        if (a_digits, b_digits) != (1, 1):
            assert abs(count - a_digits * b_digits * unit) <= 1
    assert counts[(4, 4)] > 3000  # balanced sampling gives 4x4 1,392


def test_operations_can_be_named():
    assert DataConfig(operations="sub,mul").operators == ("-", "*")


def test_max_operands_mixes_operand_counts():
    splits = generate_splits(DataConfig(num_examples=3000, max_digits=2, max_operands=4))
    counts = Counter(len(problem.operands) for problem in all_problems(splits))
    assert counts == {2: 1000, 3: 1000, 4: 1000}
    for text in splits["train"]:
        prompt, answer = split_example(text)
        assert int(answer) == sum(map(int, prompt[:-1].split("+")))


@pytest.mark.parametrize("sampling", ["balanced", "length-weighted"])
def test_many_operands_draw_their_lengths_per_problem_in_the_samplings_shares(sampling):
    # 10 operands of 1-10 digits: 10^10 combinations of lengths, which listing them one by one ran out of memory on
    splits = generate_splits(DataConfig(num_examples=18_000, max_digits=10, max_operands=10, sampling=sampling,
                                        test_only=True))
    problems = all_problems(splits)
    assert len(set(problems)) == len(problems) == 18_000
    assert Counter(len(problem.operands) for problem in problems) == {count: 2000 for count in range(2, 11)}
    for operand_count in (4, 10):  # 10^4 combinations for 2,000 problems: drawn per problem too, not shortest first
        lengths = Counter(len(str(operand)) for problem in problems if len(problem.operands) == operand_count
                          for operand in problem.operands)
        total = sum(lengths.values())
        for length in range(1, 11):
            share = 1 / 10 if sampling == "balanced" else length / 55
            assert lengths[length] / total == pytest.approx(share, rel=0.15)
    texts = [text for examples in splits.values() for text in examples][:200]
    for text in texts:
        prompt, answer = split_example(text)
        assert int(answer) == sum(map(int, prompt[:-1].split("+")))


def test_uniform_sampling_draws_operands_uniformly():
    problems = all_problems(generate_splits(DataConfig(num_examples=5000, max_digits=4, sampling="uniform")))
    longest = sum(len(str(x)) == 4 for problem in problems for x in problem.operands) / (2 * len(problems))
    assert 0.87 < longest < 0.93  # 9000 of the 10,000 values have 4 digits


@pytest.mark.parametrize("operator, lengths, most", [("+", (3, 3), 3), ("+", (4, 2), 4), ("-", (3, 3), 2),
                                                    ("-", (2, 4), 3)])
def test_carry_balanced_sampling_spreads_carries_evenly_as_evaluation_counts_them(operator, lengths, most):
    pairs = sample_carry_balanced(OPERATIONS[operator], lengths, 600, np.random.default_rng(0))
    problems = [Problem(operator, tuple(pair)) for pair in pairs.tolist()]
    assert all(problem.operand_digits == lengths for problem in problems)
    counts = Counter(num_carries(problem) for problem in problems)
    assert set(counts) == set(range(most + 1))
    assert max(counts.values()) < 1.5 * min(counts.values())
    if operator == "-":  # a shorter first operand is always negative, equal lengths half the time
        negative = sum(problem.result < 0 for problem in problems) / len(problems)
        assert negative == 1 if lengths[0] < lengths[1] else 0.4 < negative < 0.6


def test_carry_balanced_sampling_makes_long_carry_chains_common():
    def share_of_full_carries(sampling):
        splits = generate_splits(DataConfig(num_examples=10_000, max_digits=5, sampling=sampling, seed=3))
        full = [num_carries(p) == 5 for p in all_problems(splits) if p.operand_digits == (5, 5)]
        return sum(full) / len(full)
    assert share_of_full_carries("balanced") < 0.08
    assert 0.11 < share_of_full_carries("carry-balanced") < 0.23  # 0 to 5 carries: a sixth each


@pytest.mark.parametrize("overrides, message", [
    ({"operations": "+,%"}, "--operations must be a comma-separated subset"),
    ({"operations": "+,+"}, "--operations must be a comma-separated subset"),
    ({"max_operands": 1}, "--max-operands must be at least 2"),
    ({"sampling": "carry-balanced", "operations": "*"}, "carry-balanced counts the carries"),
    ({"operations": "/", "max_operands": 3}, "div \\(/\\) takes at most 2 operands"),
    ({"operations": "+,div", "format": "padded-scratchpad"}, "format writes scratchpad steps, and div"),
    ({"format": "scratchpad", "operations": "+,-", "max_operands": 3}, "steps for - with at most 2 operands"),
    ({"format": "scratchpad-pairwise", "operations": "*", "max_operands": 3}, "steps for \\* with at most 2"),
    ({"sampling": "sorted"}, "--sampling must be one of"),
    ({"operations": "+,*", "operation_weights": "1"}, "--operation-weights must be 2 positive numbers"),
    ({"operations": "+,*", "operation_weights": "1,0"}, "--operation-weights must be 2 positive numbers"),
    ({"operations": "+,*", "operation_weights": "1,x"}, "--operation-weights must be 2 positive numbers"),
    ({"operations": "+,*", "operation_weights": "1,inf"}, "--operation-weights must be 2 positive numbers"),
])
def test_bad_generation_settings_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(**overrides)


def test_the_vocabulary_follows_the_data():
    assert vocab_for(generate_splits(DataConfig(num_examples=100))["train"]) == DEFAULT_VOCAB
    mixed = vocab_for(generate_splits(DataConfig(num_examples=300, operations="-,*"))["train"])
    assert mixed == DEFAULT_VOCAB + ["-", "*"]
    scratchpad = vocab_for(generate_splits(DataConfig(num_examples=100, format="scratchpad"))["train"])
    assert scratchpad == DEFAULT_VOCAB + [" ", "<think>", "</think>"]
    with pytest.raises(TokenizerError, match="unknown character 'x'"):
        Tokenizer(vocab_for(["1x2=2<end>"])).encode("1x2=2<end>")


def test_data_files_from_before_operations_still_load(tmp_path):
    path = tmp_path / "test.json"
    path.write_text('{"metadata": {"split": "test", "operations": ["+"], "num_examples": 2}, '
                    '"examples": ["1+1=2<end>", "12+7=19<end>"]}')
    dataset = ArithmeticDataset.from_file(str(path), Tokenizer())
    assert [problem.operands for problem in dataset.problems] == [(1, 1), (12, 7)]


def test_a_prompt_that_is_not_a_problem_names_its_line(tmp_path):
    path = tmp_path / "test.json"
    path.write_text('{"examples": [\n"1+1=2<end>",\n"11=2<end>"\n]}')
    with pytest.raises(DataError, match="test.json line 3: expected a prompt like"):
        ArithmeticDataset.from_file(str(path), Tokenizer())


def test_weighted_quotas_follow_weights_within_capacities():
    assert weighted_quotas(1000, [1, 1, 2], [10**6] * 3) == [250, 250, 500]
    assert weighted_quotas(10, [1, 1, 1], [2, 100, 100]) == [2, 4, 4]
    assert sum(weighted_quotas(7, [0.1, 0.1, 0.8], [100] * 3)) == 7


def test_mixed_sampling_is_half_balanced_half_uniform():
    problems = all_problems(generate_splits(DataConfig(num_examples=20_000, max_digits=4, sampling="mixed")))
    counts = Counter(problem.operand_digits for problem in problems)
    # 4x4 holds 81% of all problems: 0.5 / 16 + 0.5 * 0.81 = 44% of the data; 1x2 holds 0.09%: about 1/32
    assert 0.43 < counts[(4, 4)] / 20_000 < 0.46
    assert 0.028 < counts[(1, 2)] / 20_000 < 0.036


def test_min_digits_and_same_length_sampling_give_the_asked_lengths():
    config = DataConfig(num_examples=600, min_digits=4, max_digits=6, sampling="same-length", test_only=True)
    problems = all_problems(generate_splits(config))
    assert Counter(problem.operand_digits for problem in problems) == {(4, 4): 200, (5, 5): 200, (6, 6): 200}
    balanced = all_problems(generate_splits(DataConfig(num_examples=900, min_digits=3, max_digits=5)))
    assert Counter(problem.operand_digits for problem in balanced) == {
        (a, b): 100 for a in range(3, 6) for b in range(3, 6)}
    uniform = all_problems(generate_splits(DataConfig(num_examples=500, min_digits=3, max_digits=4,
                                                      sampling="uniform")))
    assert min(min(problem.operands) for problem in uniform) >= 100


@pytest.mark.parametrize("data_format", ["plain", "reversed-all", "padded-reversed-all"])
@pytest.mark.parametrize("sampling", ["same-length", "uniform", "carry-balanced"])
def test_numbers_far_past_int64_are_sampled_written_and_read_back_exactly(data_format, sampling):
    config = DataConfig(num_examples=300, min_digits=40, max_digits=60, sampling=sampling, format=data_format,
                        operations="+,-", seed=5)
    splits = generate_splits(config)
    examples = splits["train"] + splits["val"] + splits["test"]
    assert len(set(examples)) == 300
    problems = all_problems(splits, data_format)
    assert all(40 <= min(problem.operand_digits) and max(problem.operand_digits) <= 60 for problem in problems)
    for problem, text in zip(problems, examples):
        assert problem.render(FORMATS[data_format], config.max_digits) == text  # the exact big-int answer
    longest = Counter(max(problem.operand_digits) for problem in problems)
    if sampling == "uniform":  # 9 in 10 numbers below 10^60 have 60 digits
        assert 0.95 < longest[60] / 300 < 1  # the longer of two operands: 1 - 0.1^2 = 99%
    else:
        assert len(longest) > 10  # spread over the range


def test_test_only_writes_every_problem_to_the_test_split(tmp_path):
    config = DataConfig(num_examples=50, max_digits=3, test_only=True)
    splits = generate_splits(config)
    assert list(splits) == ["test"] and len(splits["test"]) == 50
    write_splits(tmp_path, splits, config)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["test.json"]


def test_division_never_draws_a_zero_divisor_and_counts_what_exists():
    config = DataConfig(num_examples=10_000, max_digits=1, operations="/", test_only=True)
    problems = all_problems(generate_splits(config))
    assert len(problems) == 90 and min(problem.operands[1] for problem in problems) == 1  # 10 x 9 exist
    balanced = all_problems(generate_splits(DataConfig(num_examples=3000, max_digits=3, operations="+,/", seed=2)))
    assert Counter(problem.operator for problem in balanced) == {"+": 1500, "/": 1500}
    assert all(problem.operands[1] > 0 for problem in balanced if problem.operator == "/")
    for sampling in ("uniform", "mixed", "same-length"):
        sampled = all_problems(generate_splits(DataConfig(num_examples=500, max_digits=2, operations="/",
                                                          sampling=sampling, seed=3)))
        assert len(set(sampled)) == 500 and all(problem.operands[1] > 0 for problem in sampled)


def test_an_unknown_operation_in_a_files_metadata_is_a_clear_error(tmp_path):
    path = tmp_path / "test.json"
    path.write_text('{"metadata": {"operations": "+,x"}, "examples": ["1+1=2<end>"]}')
    with pytest.raises(DataError, match="test.json: unknown operation 'x'"):
        read_split(str(path))
    path.write_text('{"metadata": {"operations": "add,div"}, "examples": ["1+1=2<end>"]}')
    assert read_split(str(path))[1]["operations"] == "add,div"  # names are read as the flag reads them
