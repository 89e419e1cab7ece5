"""The one check that a dataset or a typed prompt is something a trained model can read: its format, its operand
width, its positions and digit places; each failure a one-line error naming the file and line."""

import json

import pytest

from math_llm.data import ArithmeticDataset
from math_llm.errors import DataError
from math_llm.formats import FORMATS
from math_llm.model import ModelConfig, Transformer
from math_llm.tokenizer import Tokenizer
from math_llm.trained_model import TrainedModel


def trained_on(format_name, operand_width=None, **model_settings):
    tokenizer = Tokenizer()
    model = Transformer(ModelConfig("tiny", **tokenizer.digit_place_ids(), **model_settings))
    return TrainedModel(model, tokenizer, FORMATS[format_name], operand_width, {"min_digits": 1, "max_digits": 2},
                        source="run/best_model.pt")


def data_file(tmp_path, examples, format_name):
    path = tmp_path / "test.json"
    path.write_text('{"metadata": {"format": "' + format_name + '"}, "examples": [\n'
                    + ",\n".join(json.dumps(text) for text in examples) + "\n]}")
    return ArithmeticDataset.from_file(str(path), Tokenizer())


def test_data_in_the_format_and_width_the_model_learned_is_accepted(tmp_path):
    trained_on("padded-reversed", 2).check_datasets(data_file(tmp_path, ["12+07=910<end>"], "padded-reversed"))
    assert trained_on("plain").trained_lengths == [1, 2]


def test_another_format_or_width_is_refused_naming_both(tmp_path):
    with pytest.raises(DataError, match="test.json: its problems are in the 'padded-reversed' format, but "
                                        "run/best_model.pt was trained on 'plain'"):
        trained_on("plain").check_datasets(data_file(tmp_path, ["12+07=910<end>"], "padded-reversed"))
    with pytest.raises(DataError, match="test.json: its operands are padded to 3 digits, but run/best_model.pt "
                                        "learned 2; generate the data with --max-digits 2"):
        trained_on("padded-reversed", 2).check_datasets(data_file(tmp_path, ["012+007=9100<end>"], "padded-reversed"))


def test_a_problem_past_the_models_positions_or_digit_places_names_its_line(tmp_path):
    dataset = data_file(tmp_path, ["1+1=2<end>", "123456+1=223456<end>"], "reversed-all")  # 654321 + 1
    with pytest.raises(DataError, match="test.json line 3: '123456\\+1=223456<end>' has 16 tokens, more than the "
                                        "max_length of 12"):
        trained_on("reversed-all", max_length=12).check_datasets(dataset)
    with pytest.raises(DataError, match="test.json line 3: '123456\\+1=223456<end>' has a number that reaches "
                                        "digit place 7, beyond the model's 6 \\(train.py --digit-positions\\)"):
        trained_on("reversed-all", pos_encoding="abacus", digit_positions=7).check_datasets(dataset)
    trained_on("reversed-all", pos_encoding="rope").check_datasets(dataset)


def test_a_typed_prompt_is_checked_as_data_is():
    padded = trained_on("padded-reversed", 2)
    assert padded.encode_prompt("12+07=") == Tokenizer().encode("12+07=")
    assert padded.encode_prompt("7+") == Tokenizer().encode("7+")  # the start of a problem is not checked
    with pytest.raises(ValueError, match="this model reads operands padded to 2 digits, as 07"):
        padded.encode_prompt("12+7=")
    with pytest.raises(ValueError, match="unknown character '\\*'"):
        padded.encode_prompt("12*07=")
    with pytest.raises(ValueError, match="'1234567890123\\+1=' has 16 tokens, more than the max_length of 8"):
        trained_on("plain", max_length=8).encode_prompt("1234567890123+1=")
