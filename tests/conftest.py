"""Fixtures shared by the test files: a small dataset on disk and one uninterrupted training run. Tests that start
processes or train are marked slow; `pytest -m "not slow"` runs the rest in seconds."""

import pytest

from math_llm.data import write_splits
from math_llm.data_generation import DataConfig, generate_splits
from tests.helpers import SLOW_TEST, run_script, train_args


@pytest.hookimpl(tryfirst=True)  # before the fixtures of the test are set up
def pytest_runtest_setup(item):
    SLOW_TEST["running"] = item.get_closest_marker("slow") is not None


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    config = DataConfig(num_examples=2000, max_digits=2, seed=0)
    write_splits(str(path), generate_splits(config), config)
    return path


@pytest.fixture(scope="module")
def reference_run(data_dir, tmp_path_factory):
    """One uninterrupted run that the interrupted ones must reproduce exactly."""
    home = tmp_path_factory.mktemp("home")
    output_dir = tmp_path_factory.mktemp("reference")
    run_script("train.py", *train_args(data_dir, output_dir), home=home)
    return output_dir
