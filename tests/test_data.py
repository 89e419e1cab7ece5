import json
import logging

import pytest
import torch

from src.data import IGNORE_INDEX, ArithmeticDataset, DataConfig, fill_quotas, generate_splits, read_split, write_splits
from src.problems import FORMATS, Problem, parse_prompt, split_example
from src.errors import DataError
from src.tokenizer import Tokenizer


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
        splits = generate_splits(DataConfig(num_examples=10_000, max_digits=1), logging.getLogger("test"))
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
        ArithmeticDataset.from_file(path, Tokenizer(), max_length=32)


def test_example_longer_than_max_length_is_an_error():
    with pytest.raises(DataError, match=r"has 12 tokens, more than the max_length of 8 \(train.py --max-length\)"):
        ArithmeticDataset(["123+456=579<end>"], Tokenizer(), max_length=8)


def test_written_files_record_their_config(tmp_path):
    config = DataConfig(num_examples=200, max_digits=2, seed=3)
    write_splits(str(tmp_path), generate_splits(config), config)
    metadata = json.loads((tmp_path / "val.json").read_text())["metadata"]
    assert metadata["split"] == "val" and metadata["max_digits"] == 2 and metadata["format"] == "plain"


def test_batch_targets_cover_only_answer_tokens_and_pad_to_longest_in_batch():
    tokenizer = Tokenizer()
    dataset = ArithmeticDataset(["1+2=3<end>", "12+34=46<end>", "5+5=10<end>"], tokenizer, max_length=32)
    inputs, targets = dataset.batch(torch.tensor([0, 2]))
    assert inputs.shape == (2, 6)  # "5+5=10<end>" has 7 tokens: inputs drop the last
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
    dataset = ArithmeticDataset.from_file(str(tmp_path / "val.json"), Tokenizer(), max_length=32)
    assert dataset.format == "padded-reversed"
    _, metadata, _ = read_split(str(tmp_path / "train.json"))
    assert metadata["format"] == "padded-reversed"


@pytest.mark.parametrize("value, shown", [('"roman"', "'roman'"), ('["plain"]', r"\['plain'\]")])
def test_unknown_format_in_a_data_file_is_a_clear_error(tmp_path, value, shown):
    path = tmp_path / "test.json"
    path.write_text('{"metadata": {"format": ' + value + '}, "examples": ["1+1=2<end>"]}')
    with pytest.raises(DataError, match=f"test.json: unknown data format {shown}"):
        read_split(str(path))


def test_padded_formats_know_their_operand_width():
    dataset = ArithmeticDataset(["012+007=0019<end>"], Tokenizer(), 32, data_format="padded")
    assert dataset.operand_width == 3
    assert ArithmeticDataset(["12+7=19<end>"], Tokenizer(), 32).operand_width is None
