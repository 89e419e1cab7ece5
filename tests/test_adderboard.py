"""AdderBoard: the protocol's problems as its verify.py draws them, and the export of a trained model to a
self-contained submission file that answers as evaluate.py does on the same problems."""

import json
import os
import subprocess
import sys

import pytest
import torch

from math_llm.adderboard import (EDGE_CASES, check_submission, load_submission, protocol_pairs, score_submission,
                                 write_submission)
from math_llm.checkpoint import load_model
from math_llm.data import read_split
from math_llm.data_generation import DataConfig, generate_splits
from math_llm.errors import ConfigError
from math_llm.formats import FORMATS
from math_llm.model import ModelConfig, Transformer
from math_llm.problems import parse_prompt, split_example
from math_llm.tokenizer import Tokenizer
from math_llm.trained_model import TrainedModel
from tests.helpers import run_script

FORMAT = "reversed-all"  # operands unpadded: a model trained on short numbers still reads 10-digit ones


def test_protocol_pairs_are_the_problems_verify_py_draws():
    pairs = protocol_pairs(2025, 3)
    assert pairs[:10] == list(EDGE_CASES) and len(pairs) == 13
    # verify.py --seed 2025's first random pairs, as its random.Random(2025).randint draws them
    assert pairs[10:12] == [(2395527356, 9334186774), (4296888873, 8475224721)]
    assert protocol_pairs(1, 3)[10:] != pairs[10:]


def test_adderboard_sampling_writes_the_protocols_problems_in_its_order():
    config = DataConfig(num_examples=50, max_digits=10, seed=7, format="padded-reversed-all", test_only=True,
                        sampling="adderboard")
    examples = generate_splits(config)["test"]
    problems = [parse_prompt(split_example(text)[0], config.data_format) for text in examples]
    assert [problem.operands for problem in problems] == list(dict.fromkeys(protocol_pairs(7, 50)))
    assert len(examples) == 59  # the repeated edge case once
    assert examples[2] == "9999999999+0000000000=99999999990<end>"


@pytest.mark.parametrize("settings", [dict(test_only=False), dict(max_digits=9), dict(operations="+,-")])
def test_adderboard_sampling_outside_its_protocol_is_one_line(settings):
    with pytest.raises(ConfigError, match="--sampling adderboard draws AdderBoard's test set"):
        DataConfig(**{**dict(num_examples=50, max_digits=10, test_only=True, sampling="adderboard"), **settings})


def untrained(data_format, operand_width, max_length=36):
    config = ModelConfig("tiny", num_layers=1, hidden_size=8, num_heads=1, ffn_size=8, max_length=max_length)
    return TrainedModel(Transformer(config), Tokenizer(), FORMATS[data_format], operand_width,
                        {"max_digits": 10, "operations": "+"}, source="run/best_model.pt")


@pytest.mark.parametrize("trained, problem", [
    (untrained("padded-reversed", 5), "zero-padded to 5 digits"),
    (untrained("reversed-all", None, max_length=30), "positions reach 30 tokens, and a 10-digit addition takes 34"),
])
def test_a_model_that_cannot_add_10_digit_numbers_is_not_exported(tmp_path, trained, problem):
    with pytest.raises(ConfigError, match=f"run/best_model.pt cannot be exported to AdderBoard: .*{problem}"):
        write_submission(trained, str(tmp_path / "adder.py"), "x", "y")
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("data_format, operand_width", [("padded-reversed-all", 10), ("plain", None),
                                                        ("aligned-reversed-all", None)])
def test_an_export_holds_the_exact_weights_and_writes_prompts_as_evaluation_does(tmp_path, data_format,
                                                                                 operand_width):
    trained = untrained(data_format, operand_width)
    torch.nn.init.normal_(trained.model.blocks[0].mlp[0].weight, std=1.7)  # values far from any short decimal
    path = str(tmp_path / "adder.py")
    metadata = write_submission(trained, path, "tiny adder", "tests")
    module = load_submission(path)
    model, loaded_metadata = module.build_model()
    assert loaded_metadata == metadata and metadata["params"] == trained.model.num_parameters()
    assert "tied embeddings" in metadata["tricks"] and "no biases" not in metadata["tricks"]
    expected = trained.model.state_dict()
    assert model.state_dict().keys() == expected.keys()
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in expected.items())
    for a, b in EDGE_CASES + ((12, 7), (305, 99_999)):
        assert module.prompt(a, b) == trained.prompt_for(parse_prompt(f"{a}+{b}=", FORMATS["plain"]))


@pytest.fixture(scope="module")
def adder_run(tmp_path_factory):
    """A tiny model trained for seconds on 1- and 2-digit additions, operands and answer reversed: right on most of
    its own test split, wrong on 10-digit numbers."""
    home, data_dir = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("data")
    output_dir = tmp_path_factory.mktemp("run")
    run_script("generate_data.py", "--num-examples", 4000, "--format", FORMAT, "--output-dir", data_dir, home=home)
    run_script("train.py", "--data-dir", data_dir, "--output-dir", output_dir, "--model-size", "tiny",
               "--max-length", 36, "--batch-size", 64, "--learning-rate", 3e-3, "--warmup-steps", 20,
               "--num-epochs", 8, "--eval-steps", 100, "--no-wandb", home=home)
    return home, data_dir, output_dir


def evaluated_answers(home, checkpoint, data_path, output_file):
    """{(a, b): (right, predicted text)} of evaluate.py on the file, and its exact match."""
    run_script("evaluate.py", "--checkpoint", checkpoint, "--data-path", data_path, "--num-mistakes", 100_000,
               "--no-edge-cases", "--output-file", output_file, home=home)
    with open(output_file) as f:
        results = json.load(f)
    mistakes = {mistake["prompt"]: mistake["predicted"] for mistake in results["mistakes"]}
    answers = {}
    for text in read_split(data_path)[0]:
        prompt = split_example(text)[0]
        answers[parse_prompt(prompt, FORMATS[FORMAT]).operands] = (prompt not in mistakes, mistakes.get(prompt))
    return answers, results["exact_match"]


def assert_export_agrees(module, model, answers):
    """The export's answer to each problem is right exactly where evaluate.py's is, and where wrong, begins with
    what evaluate.py read (which stops at the expected answer's length and its end token)."""
    for (a, b), (right, predicted) in answers.items():
        text = module.answer_text(model, a, b)
        assert (text == str(a + b)[::-1]) == right, (a, b, text, predicted)
        if not right:
            assert text[:len(predicted)] == predicted, (a, b, text, predicted)


@pytest.mark.slow
def test_an_exported_model_answers_as_evaluate_py_does_and_is_scored_as_verify_py_scores(adder_run, tmp_path):
    home, data_dir, output_dir = adder_run
    submission = tmp_path / "adder.py"
    result = run_script("export_adderboard.py", output_dir, "--output", submission, "--seeds", "2025,1",
                        "--num-tests", 40, home=home)
    assert "seed 2025:" in result.stderr and "seed 1:" in result.stderr
    with open(tmp_path / "adder_scores.json") as f:
        scores = json.load(f)["seeds"]
    module = load_submission(str(submission))
    model, metadata = module.build_model()
    assert metadata["params"] == load_model(str(output_dir), "cpu").model.num_parameters()
    fresh = [score_submission(module, model, seed, 40) for seed in (2025, 1)]
    assert [(s["seed"], s["passed"], s["total"], s["failures"]) for s in scores] == \
        [(s["seed"], s["passed"], s["total"], s["failures"]) for s in fresh]

    # On its own test split (short numbers), the model is mostly right: both must be right on the same problems
    own_answers, exact_match = evaluated_answers(home, output_dir, os.path.join(data_dir, "test.json"),
                                                 tmp_path / "own.json")
    assert exact_match > 0.5
    assert_export_agrees(module, model, own_answers)

    # On the protocol's 10-digit problems it is mostly wrong: both must write the same wrong answers
    protocol_dir = tmp_path / "protocol"
    run_script("generate_data.py", "--sampling", "adderboard", "--test-only", "--max-digits", 10, "--seed", 2025,
               "--num-examples", 40, "--format", FORMAT, "--output-dir", protocol_dir, home=home)
    protocol_answers, _ = evaluated_answers(home, output_dir, protocol_dir / "test.json", tmp_path / "protocol.json")
    assert len(protocol_answers) == 49
    assert_export_agrees(module, model, protocol_answers)


@pytest.mark.slow
def test_an_export_runs_without_math_llm_as_verify_py_loads_it(adder_run, tmp_path):
    home, _, output_dir = adder_run
    submission = tmp_path / "adder.py"
    run_script("export_adderboard.py", output_dir, "--output", submission, "--seeds", "none", home=home)
    assert not os.path.exists(tmp_path / "adder_scores.json")
    # math_llm unimportable: the file must carry all the code it runs
    problems = [(3, 4), (12, 30), (9_999_999_999, 1)]
    check = ("import sys, importlib.util; sys.modules['math_llm'] = None\n"
             "spec = importlib.util.spec_from_file_location('submission', sys.argv[1])\n"
             "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
             "model, metadata = module.build_model()\n"
             f"print([module.answer_text(model, a, b) for a, b in {problems}])")
    result = subprocess.run([sys.executable, "-c", check, str(submission)], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    module = load_submission(str(submission))
    model, _ = module.build_model()
    assert result.stdout.strip() == str([module.answer_text(model, a, b) for a, b in problems])
    right = sum(module.answer_text(model, a, b) == str(a + b) for a in range(10) for b in range(10))
    assert right >= 30, f"{right} of 100 one-digit sums right"  # learned: random weights get none
    assert check_submission(str(submission), [2025], 0)[0]["total"] == 10
