"""AdderBoard (github.com/anadim/AdderBoard), the public leaderboard of the smallest transformers that add two
10-digit numbers: its protocol's problems, drawn exactly as its verify.py draws them; the export of a trained model to
a submission file that verify.py loads; and verify.py's scoring loop, to check such a file where the board's own
script is not at hand.

A submission defines build_model() -> (model, metadata) and add(model, a, b) -> int. The file export writes holds the
model's weights, the model code it was trained with (model.py and the two modules it imports, verbatim), generic
greedy decoding, and the conversion of a and b into the model's data format and back: adderboard_template.py.
"""

import importlib.util
import os
import pprint
import random
import time
from dataclasses import asdict

import numpy as np

from math_llm.errors import ConfigError
from math_llm.files import write_text
from math_llm.problems import Problem

MAX_OPERAND = 9_999_999_999  # both operands are in [0, MAX_OPERAND]: 10 digits
OPERAND_DIGITS = 10
# verify.py's fixed cases, in its order ((9_999_999_999, 9_999_999_999) is in it twice)
EDGE_CASES = ((0, 0), (0, 1), (9_999_999_999, 0), (9_999_999_999, 1), (9_999_999_999, 9_999_999_999),
              (5_000_000_000, 5_000_000_000), (1_111_111_111, 8_888_888_889), (1_234_567_890, 9_876_543_210),
              (9_999_999_999, 9_999_999_999), (1, 9_999_999_999))
PROTOCOL_SEED, PROTOCOL_TESTS = 2025, 10_000  # what the board's ranking runs: verify.py --seed 2025
QUALIFYING_ACCURACY = 0.99
TEMPLATE = os.path.join(os.path.dirname(__file__), "adderboard_template.py")
MODEL_MODULES = ("errors", "flags", "model")  # model.py and what it imports, in import order
FAILURES_SHOWN = 20  # as verify.py prints them


def protocol_pairs(seed=PROTOCOL_SEED, num_tests=PROTOCOL_TESTS):
    """verify.py's problems for `seed`: the edge cases, then `num_tests` pairs of random.Random(seed).randint(0,
    MAX_OPERAND), a then b."""
    rng = random.Random(seed)
    return list(EDGE_CASES) + [(rng.randint(0, MAX_OPERAND), rng.randint(0, MAX_OPERAND)) for _ in range(num_tests)]


# ---------------------------------------------------------------------------------------------------------------
# Export

def export_problems(trained):
    """Why `trained` cannot be exported as an adder of two 10-digit numbers (a list of reasons, empty if it can)."""
    problems = []
    operators = trained.trained_operators
    if operators is not None and "+" not in operators:
        problems.append(f"it was trained on {' '.join(operators)}, not addition")
    if trained.data_format.fixed_width and trained.operand_width != OPERAND_DIGITS:
        problems.append(f"it reads operands zero-padded to {trained.operand_width} digits, and AdderBoard's have "
                        f"{OPERAND_DIGITS} (train on data generated with --max-digits {OPERAND_DIGITS})")
    longest_prompt = len(prompt_text(trained.data_format, trained.operand_width, MAX_OPERAND, MAX_OPERAND))
    longest_example = longest_prompt + OPERAND_DIGITS + 2  # the answer's 11 digits and the end token
    if trained.model.max_tokens is not None and longest_example > trained.model.max_tokens:
        problems.append(f"its positions reach {trained.model.max_tokens} tokens, and a 10-digit addition takes "
                        f"{longest_example}")
    return problems


def prompt_text(data_format, operand_width, a, b):
    """The prompt of a + b as evaluate.py writes it (the submission's own prompt() is checked against it)."""
    return Problem("+", (a, b)).prompt_text(data_format, operand_width)


def number_text(value):
    """A float32 weight as the shortest text that reads back as the same float32, via Python's float as the
    submission reads it (a few values need all of a double's digits)."""
    short = str(np.float32(value))
    return short if np.float32(float(short)) == np.float32(value) else repr(float(value))


def weights_text(model):
    """The state dict as Python source: {name: (shape, [values...])}, float32, one tensor per entry."""
    entries = []
    for name, tensor in model.state_dict().items():
        values = tensor.detach().float().cpu().flatten().numpy()
        entries.append(f"    {name!r}: ({list(tensor.shape)}, [{', '.join(number_text(v) for v in values)}]),")
    return "{\n" + "\n".join(entries) + "\n}"


def tricks(trained):
    """What the model does beyond a GPT-2 block, for the board's "tricks" column."""
    config, data_format = trained.model.config, trained.data_format
    positions = {"rope": "RoPE, no position parameters", "learned": "learned absolute positions",
                 "abacus": "abacus digit places (fixed random codes, not counted)"}[config.pos_encoding]
    options = [("attention penalty by digit-place distance (ALiBi slopes)",
                config.pos_encoding == "abacus" and config.place_bias),
               ("tied embeddings", config.tie_embeddings), (f"rank-{config.rank} factorised linear layers", config.rank),
               ("no biases", not config.bias), ("RMSNorm", config.norm == "rmsnorm"), ("SwiGLU", config.mlp == "swiglu")]
    return [positions, *(text for text, chosen in options if chosen),
            f"data format {data_format.name}: {data_format.example}",
            "trained by Math LLM's generic train.py (AdamW), greedy decoding"]


def write_submission(trained, path, name, author):
    """Writes the AdderBoard submission of `trained` (a TrainedModel) to `path`; returns its metadata."""
    if problems := export_problems(trained):
        raise ConfigError(f"{trained.source} cannot be exported to AdderBoard: {'; '.join(problems)}")
    config = trained.model.config
    metadata = {"name": name, "author": author, "params": trained.model.num_parameters(),
                "architecture": f"{config.shape_text}, {config.pos_encoding} positions",
                "tricks": tricks(trained)}
    sources = {}
    package_dir = os.path.dirname(__file__)
    for module in MODEL_MODULES:
        with open(os.path.join(package_dir, f"{module}.py"), encoding="utf-8") as f:
            source = f.read()
        assert "'''" not in source and not source.endswith("\\"), f"{module}.py must fit a raw ''' string"
        sources[module] = source
    data_format = trained.data_format
    with open(TEMPLATE, encoding="utf-8") as f:
        template = f.read()
    constants = "\n".join([
        f"METADATA = {pprint.pformat(metadata, width=116, sort_dicts=False)}",
        f"MODEL_CONFIG = {pprint.pformat(asdict(config), width=116, sort_dicts=False)}",
        f"VOCAB = {trained.tokenizer.vocab!r}",
        f"PADDING, OPERAND_WIDTH = {data_format.padding!r}, {trained.operand_width!r}",
        f"REVERSE_OPERANDS, REVERSE_ANSWER = {data_format.reverse_operands!r}, {data_format.reverse_answer!r}",
        f"WEIGHTS = {weights_text(trained.model)}",
        "MODEL_SOURCES = {",
        *(f"    {module!r}: r'''{source}'''," for module, source in sources.items()),
        "}",
    ])
    header = (f'"""AdderBoard submission of {metadata["params"]:,} unique parameters, exported from '
              f'{os.path.basename(trained.source)} (step {trained.step}) by Math LLM\'s scripts/export_adderboard.py '
              f'(METADATA below names the run).\n\n'
              f'    python verify.py {os.path.basename(path)}   # AdderBoard\'s own check\n"""\n\n')
    write_text(path, header + template.replace("# SUBMISSION CONSTANTS\n", constants + "\n", 1))
    return metadata


# ---------------------------------------------------------------------------------------------------------------
# Scoring a submission as verify.py does

def load_submission(path):
    """The module of a submission file, loaded as verify.py loads it."""
    spec = importlib.util.spec_from_file_location("submission", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for function in ("build_model", "add"):
        if not hasattr(module, function):
            raise ConfigError(f"{path}: a submission defines build_model() and add(model, a, b); {function} is missing")
    return module


def score_submission(module, model, seed=PROTOCOL_SEED, num_tests=PROTOCOL_TESTS):
    """verify.py's loop: every problem of protocol_pairs(seed, num_tests) through module.add, an exception counting
    as a wrong answer. Returns {seed, passed, total, accuracy, qualified, seconds, failures (the first 20)}."""
    pairs = protocol_pairs(seed, num_tests)
    passed, failures = 0, []
    start = time.perf_counter()
    for a, b in pairs:
        expected = a + b  # the check's own answer; the submission never sees it
        try:
            result = module.add(model, a, b)
        except Exception as error:  # noqa: BLE001 (verify.py counts any failure of add as a wrong answer)
            result = f"ERROR: {error}"
        if result == expected:
            passed += 1
        elif len(failures) < FAILURES_SHOWN:
            failures.append([a, b, expected, result])
    seconds = time.perf_counter() - start
    accuracy = passed / len(pairs)
    return {"seed": seed, "passed": passed, "total": len(pairs), "accuracy": accuracy,
            "qualified": accuracy >= QUALIFYING_ACCURACY, "seconds": seconds, "failures": failures}


def check_submission(path, seeds, num_tests=PROTOCOL_TESTS, log=None):
    """Scores the submission file at `path` on each of `seeds`, loading it once; returns the list of results."""
    module = load_submission(path)
    model, _ = module.build_model()
    results = []
    for seed in seeds:
        result = score_submission(module, model, seed, num_tests)
        if log:
            log(f"seed {seed}: {result['passed']:,}/{result['total']:,} correct ({100 * result['accuracy']:.2f}%) in "
                f"{result['seconds']:.1f} s: {'QUALIFIED' if result['qualified'] else 'NOT QUALIFIED'} (threshold "
                f"{100 * QUALIFYING_ACCURACY:.0f}%)")
        results.append(result)
    return results
