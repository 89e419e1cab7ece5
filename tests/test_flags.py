"""Command-line flags built from the config dataclasses: every field with help is a flag with its type, default and
choices; nested configs join the same command line; explicitly given flags are told apart; a resumed run keeps its
saved config except for the flags that may change on resume."""

import argparse
from dataclasses import asdict

import pytest

from math_llm.data_generation import DataConfig
from math_llm.errors import ConfigError
from math_llm.evaluation import EvalConfig
from math_llm.flags import add_flags, config_from_dict, flag_fields, parse_config, resume_config
from math_llm.model import ModelConfig
from math_llm.trainer import TrainConfig


def parse(config_class, *argv):
    return parse_config(add_flags(argparse.ArgumentParser(), config_class), config_class, list(map(str, argv)))


def test_flags_fill_the_nested_config_and_the_rest_keep_their_defaults():
    config, _, explicit = parse(TrainConfig, "--model-size", "tiny", "--num-layers", 3, "--batch-size", 64,
                                "--no-place-bias", "--pos-encoding", "abacus", "--no-wandb", "--bf16")
    assert config.model == ModelConfig("tiny", num_layers=3, pos_encoding="abacus", place_bias=False)
    assert (config.batch_size, config.wandb, config.bf16, config.learning_rate) == (64, False, True, 1e-4)
    assert explicit == {"model_size", "num_layers", "batch_size", "place_bias", "pos_encoding", "wandb", "bf16"}


def test_defaults_parse_to_the_configs_own_defaults():
    for config_class in (TrainConfig, DataConfig, EvalConfig):
        config, _, explicit = parse(config_class)
        assert config == config_class() and explicit == set()


def test_every_field_with_help_is_a_flag_once_and_fields_without_are_not():
    names = flag_fields(TrainConfig)
    assert {"model_size", "max_length", "running_sum_loss", "batch_size", "seed"} <= set(names)
    assert not {"vocab_size", "digit_ids", "answer_start_id", "sign_id"} & set(names)  # set from the data
    help_text = add_flags(argparse.ArgumentParser(), TrainConfig).format_help()
    assert "--place-bias, --no-place-bias" in help_text and "--wandb, --no-wandb" in help_text
    assert "(default: 32)" in help_text and "(default: those of --model-size)" in help_text


def test_a_bad_value_is_an_argparse_error_and_a_bad_setting_a_config_error(capsys):
    with pytest.raises(SystemExit):
        parse(TrainConfig, "--model-size", "huge")
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--batch-size must be at least 1, got 0"):
        parse(TrainConfig, "--batch-size", 0)


def test_a_resume_keeps_the_saved_config_and_takes_only_flags_that_change_how_it_is_watched():
    saved = TrainConfig(ModelConfig("tiny", vocab_size=18), learning_rate=3e-3, eval_steps=100)
    given, _, explicit = parse(TrainConfig, "--eval-steps", 50, "--no-wandb", "--output-dir", "elsewhere")
    resumed = resume_config(given, explicit, saved, "run/checkpoint-9.pt")
    assert resumed == TrainConfig(ModelConfig("tiny", vocab_size=18), learning_rate=3e-3, eval_steps=50, wandb=False,
                                  output_dir="elsewhere")
    given, _, explicit = parse(TrainConfig, "--model-size", "small", "--learning-rate", 3e-3, "--no-place-bias",
                               "--pos-encoding", "abacus")
    with pytest.raises(ConfigError) as error:
        resume_config(given, explicit, saved, "run/checkpoint-9.pt")
    assert str(error.value) == (
        "run/checkpoint-9.pt: cannot resume with different settings: --model-size 'small' (run has 'tiny'), "
        "--pos-encoding 'abacus' (run has 'learned'), --no-place-bias (run has place_bias True). Drop these flags "
        "to resume, or choose a new --output-dir")


def test_a_saved_config_reads_back_and_a_damaged_one_names_its_file():
    config = TrainConfig(ModelConfig("tiny", digit_ids=(0, 1, 2)), seed=7)
    assert config_from_dict(TrainConfig, asdict(config), "x.json") == config
    assert config_from_dict(TrainConfig, {"model": {"digit_ids": [0, 1, 2]}}, "x.json").model.digit_ids == (0, 1, 2)
    with pytest.raises(ConfigError, match="x.json: unknown settings colour for TrainConfig"):
        config_from_dict(TrainConfig, {"colour": "red"}, "x.json")
    with pytest.raises(ConfigError, match="x.json: expected the settings of ModelConfig as an object, got list"):
        config_from_dict(TrainConfig, {"model": [1]}, "x.json")


def test_a_config_built_in_code_is_checked_against_the_choices_of_its_flags():
    with pytest.raises(ConfigError, match="--device must be one of auto, cpu, cuda, got 'gpu'"):
        TrainConfig(device="gpu")
    with pytest.raises(ConfigError, match="--split must be one of train, val, test, got 'dev'"):
        EvalConfig(split="dev")
