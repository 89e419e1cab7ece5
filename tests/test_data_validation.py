"""Data is checked when it is read, written whole, and never replaced under a run: answers and scratchpad steps
against their problems, operand widths, the format the text is written in; a dataset that a kill cannot leave half
written; a resumed run whose data is gone."""

import argparse
import json
import os
import shlex
import shutil
from dataclasses import asdict

import pytest

from math_llm import data
from math_llm.data import (ArithmeticDataset, dataset_present, generation_command, write_dataset, write_split,
                           write_splits)
from math_llm.data_generation import DataConfig, generate_splits
from math_llm.errors import DataError
from math_llm.flags import add_flags, parse_config
from math_llm.formats import FORMATS
from math_llm.problems import Problem, final_answer, split_example, written_steps
from math_llm.tokenizer import Tokenizer, vocab_for
from tests.helpers import run_script, train_args

PROBLEMS = [Problem("+", (58, 67)), Problem("-", (12, 307)), Problem("*", (12, 34))]


def load(path, examples, metadata=None):
    """Writes `examples` as a split file (with `metadata`, one example per line from line 3; without, a bare list,
    from line 2) and reads it back."""
    if metadata is None:
        path.write_text("[\n" + ",\n".join(map(json.dumps, examples)) + "\n]\n")
    else:
        write_split(str(path), examples, metadata)
    return ArithmeticDataset.from_file(str(path), Tokenizer(vocab_for(examples)))


def refusal(path, examples, metadata=None):
    with pytest.raises(DataError) as error:
        load(path, examples, metadata)
    return str(error.value)


def last_digit_changed(text):
    return text[:-1] + str((int(text[-1]) + 1) % 10)


@pytest.mark.parametrize("name", FORMATS)
def test_a_wrong_answer_is_refused_naming_its_line_and_the_right_answer_in_the_files_format(tmp_path, name):
    texts = [problem.render(FORMATS[name], 3) for problem in PROBLEMS]
    prompt, answer = split_example(texts[1])
    wrong_answer = last_digit_changed(answer)
    texts[1] = f"{prompt}{wrong_answer}<end>"
    path = tmp_path / "test.json"
    assert refusal(path, texts, {"format": name}) == (
        f"{path} line 4: {texts[1]!r} states the answer {final_answer(wrong_answer)}, but {prompt[:-1]} = "
        f"{final_answer(answer)}")


def test_a_wrong_answer_in_memory_names_its_example():
    with pytest.raises(DataError, match=r"^<memory> example 1: '2\+2=5<end>' states the answer 5, but 2\+2 = 4$"):
        ArithmeticDataset(["1+1=2<end>", "2+2=5<end>"], Tokenizer())


def test_answers_all_off_by_one_are_refused_at_the_first(tmp_path):
    texts = [f"{a}+{b}={a + b + 1}<end>" for a, b in [(3, 4), (12, 30), (99, 1)]]
    assert refusal(tmp_path / "test.json", texts) == (
        f"{tmp_path / 'test.json'} line 2: '3+4=8<end>' states the answer 8, but 3+4 = 7")


@pytest.mark.parametrize("name", [name for name, fmt in FORMATS.items() if fmt.scratchpad])
def test_a_wrong_scratchpad_step_is_refused_though_the_answer_is_right(tmp_path, name):
    text = PROBLEMS[0].render(FORMATS[name], 2)
    prompt, answer = split_example(text)
    step = written_steps(answer)[1]
    wrong = text.replace(f" {step}", f" {last_digit_changed(step)}")
    assert final_answer(split_example(wrong)[1]) == final_answer(answer)
    assert refusal(tmp_path / "train.json", [wrong], {"format": name}) == (
        f"{tmp_path / 'train.json'} line 3: {wrong!r} writes step 2 of its scratchpad as "
        f"{last_digit_changed(step)!r}, but 58+67 takes {step!r}")


def test_a_problem_that_is_none_is_refused(tmp_path):
    assert refusal(tmp_path / "test.json", ["17/5=3r2<end>", "17/0=0r0<end>"]) == (
        f"{tmp_path / 'test.json'} line 3: 17/0: div takes no 0 as operand 2")


def test_operands_of_another_width_in_a_padded_file_name_their_line(tmp_path):
    texts = [problem.render(FORMATS["padded-reversed"], 3) for problem in PROBLEMS[:2]] + ["12+07=910<end>"]
    assert refusal(tmp_path / "test.json", texts, {"format": "padded-reversed"}) == (
        f"{tmp_path / 'test.json'} line 5: '12+07=910<end>' has operands of 2 and 2 digits, but the "
        f"'padded-reversed' format pads all operands of a file to one width, here 3 (its first's)")


@pytest.mark.parametrize("written, stated", [("padded-reversed", "plain"), ("plain", "padded-reversed"),
                                             ("reversed-all", "reversed"), ("scratchpad", "plain"),
                                             ("plain", "padded-scratchpad")])
def test_metadata_that_names_another_format_than_the_text_is_written_in_names_both(tmp_path, written, stated):
    config = DataConfig(num_examples=200, max_digits=3, operations="+,-", format=written, seed=4)
    examples = generate_splits(config)["test"]
    with pytest.raises(DataError, match=f"test.json line [0-9]+: written in the '{written}' format, but its "
                                        f"metadata says '{stated}'$"):
        load(tmp_path / "test.json", examples, {**asdict(config), "format": stated})


def test_a_file_without_metadata_in_another_format_than_plain_is_told_how_to_say_so(tmp_path):
    examples = generate_splits(DataConfig(num_examples=100, format="padded-reversed", seed=4))["test"]
    assert refusal(tmp_path / "test.json", examples) == (
        f"{tmp_path / 'test.json'} line 2: written in the 'padded-reversed' format, but a file whose metadata names no "
        f"format is read as 'plain' (write it as {{\"metadata\": {{\"format\": \"padded-reversed\"}}, \"examples\": "
        f"[...]}})")


@pytest.mark.parametrize("name", FORMATS)
def test_generated_data_of_every_format_loads_and_answers_moved_to_other_problems_do_not(tmp_path, name):
    operations = "+,-,*" if FORMATS[name].scratchpad else "+,-,*,/"
    config = DataConfig(num_examples=400, max_digits=3, operations=operations, format=name, seed=2)
    examples = generate_splits(config)["train"]
    assert len(load(tmp_path / "train.json", examples, asdict(config))) == 320  # no false alarm
    moved = [split_example(text)[0] + split_example(examples[index - 1])[1] + "<end>"
             for index, text in enumerate(examples)]
    with pytest.raises(DataError, match="train.json line 3: "):
        load(tmp_path / "train.json", moved, asdict(config))


@pytest.mark.parametrize("existing", [False, True])
def test_a_kill_mid_generation_leaves_no_partial_dataset_and_no_temporary_directory(tmp_path, monkeypatch, existing):
    target = tmp_path / "data"
    if existing:
        old = DataConfig(num_examples=100, seed=1)
        write_splits(str(target), generate_splits(old), old)
    before = {path.name: path.read_text() for path in target.glob("*")}
    written = []

    def write_then_die(path, examples, metadata):
        if written:
            raise KeyboardInterrupt  # as a Ctrl-C would, after the first split
        written.append(path)
        write_split(path, examples, metadata)

    monkeypatch.setattr(data, "write_split", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(str(target), DataConfig(num_examples=100, seed=2))
    assert written and {path.name: path.read_text() for path in target.glob("*")} == before  # nothing or the old
    assert sorted(path.name for path in tmp_path.iterdir()) == (["data"] if existing else [])


def test_a_kill_while_moving_new_splits_over_old_ones_leaves_a_partial_dataset_not_a_mixed_one(tmp_path, monkeypatch):
    target = tmp_path / "data"
    old = DataConfig(num_examples=100, seed=1)
    write_splits(str(target), generate_splits(old), old)
    replace, moved = os.replace, []

    def replace_then_die(source, destination):
        if os.path.dirname(destination) == str(target):  # into the dataset, not into a file's temporary copy
            if moved:
                raise KeyboardInterrupt
            moved.append(destination)
        replace(source, destination)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(str(target), DataConfig(num_examples=100, seed=2))
    monkeypatch.undo()
    with pytest.raises(DataError, match="test.json; delete the directory and generate all of train, val, test again"):
        dataset_present(str(target))


@pytest.mark.parametrize("config", [DataConfig(), DataConfig(num_examples=200, seed=5),
                                    DataConfig(operations="-,*", operation_weights="1,2", format="padded-scratchpad",
                                               max_digits=4, val_fraction=0.005, sampling="mixed")])
def test_the_restore_command_generates_the_data_config_it_was_made_from(config):
    parser = argparse.ArgumentParser()  # as generate_data.py's
    add_flags(parser, DataConfig)
    parser.add_argument("--output-dir")
    words = shlex.split(generation_command(asdict(config), "my data"))
    assert words[:2] == ["python", "scripts/generate_data.py"] and words[-2:] == ["--output-dir", "my data"]
    assert parse_config(parser, DataConfig, words[2:])[0] == config


def test_data_that_generation_did_not_record_has_no_restore_command():
    assert generation_command({"format": "plain"}, "data") is None  # a hand-written file's
    assert generation_command({**asdict(DataConfig()), "max_carries": 3}, "data") is None  # another version's


@pytest.mark.slow
def test_resuming_a_run_whose_data_was_deleted_says_how_to_restore_it_and_generates_nothing(tmp_path):
    data_dir, output_dir = tmp_path / "data", tmp_path / "run"
    config = DataConfig(num_examples=200, seed=5)
    write_splits(str(data_dir), generate_splits(config), config)
    run_script("train.py", *train_args(data_dir, output_dir, "--num-epochs", 1), home=tmp_path)
    shutil.rmtree(data_dir)
    result = run_script("train.py", "--output-dir", output_dir, home=tmp_path, check=False)
    command = f"python scripts/generate_data.py --num-examples 200 --seed 5 --output-dir {data_dir}"
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (f"cannot resume {output_dir}: its data in {data_dir} is gone (no train.json, val.json, test.json); move "
            f"it back, or generate it again: {command}") in result.stderr
    assert not data_dir.exists()
    run_script("generate_data.py", *shlex.split(command)[2:], home=tmp_path)  # the same data again: it resumes
    assert "resuming" in run_script("train.py", "--output-dir", output_dir, home=tmp_path).stderr
    # a run stopped before its first checkpoint has only its training_config.json to say what its data was
    for written in output_dir.iterdir():
        if written.name != "training_config.json":
            shutil.rmtree(written) if written.is_dir() else written.unlink()
    shutil.rmtree(data_dir)
    result = run_script("train.py", "--output-dir", output_dir, home=tmp_path, check=False)
    assert result.returncode == 1 and f"its data in {data_dir} is gone" in result.stderr and not data_dir.exists()
