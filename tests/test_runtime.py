import pytest
import torch

from math_llm.errors import ConfigError
from math_llm.evaluation import EvalConfig
from math_llm.runtime import select_device, select_precision
from math_llm.trainer import TrainConfig
from tests.helpers import run_script, train_args


CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def test_fp32_unless_mixed_precision_is_asked_for():
    for device in (CUDA, CPU):
        precision = select_precision(device)
        assert precision.autocast_dtype is None and not precision.use_grad_scaler


def test_fp16_on_cuda_uses_autocast_fp16_with_grad_scaler():
    precision = select_precision(CUDA, fp16=True)
    assert precision.autocast_dtype == torch.float16 and precision.use_grad_scaler


def test_bf16_on_cuda_needs_no_grad_scaler(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    precision = select_precision(CUDA, bf16=True)
    assert precision.autocast_dtype == torch.bfloat16 and not precision.use_grad_scaler


def test_bf16_on_a_gpu_without_it_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    with pytest.raises(ConfigError, match="no bf16 support; use --fp16"):
        select_precision(CUDA, bf16=True)


def test_fp16_on_cpu_becomes_bf16_without_scaler_and_says_so():
    precision = select_precision(CPU, fp16=True)
    assert precision.autocast_dtype == torch.bfloat16 and not precision.use_grad_scaler
    assert "bf16" in precision.description and "CUDA-only" in precision.description


def test_bf16_on_cpu_is_autocast_without_scaler():
    precision = select_precision(CPU, bf16=True)
    assert precision.autocast_dtype == torch.bfloat16 and not precision.use_grad_scaler


@pytest.mark.parametrize("config_class", [TrainConfig, EvalConfig])
def test_fp16_and_bf16_together_are_refused(config_class):
    with pytest.raises(ConfigError, match="--fp16 and --bf16 exclude each other"):
        config_class(fp16=True, bf16=True)


def test_device_selection():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device is available"):
            select_device("cuda")


@pytest.mark.slow
def test_fp16_flag_trains_with_bf16_autocast_on_cpu(data_dir, tmp_path):
    result = run_script("train.py", *train_args(data_dir, tmp_path / "run", "--fp16", "--num-epochs", 1,
                                                "--device", "cpu"), home=tmp_path)
    assert "precision bf16 autocast" in result.stderr
    assert (tmp_path / "run" / "test_results.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_flag_trains_with_grad_scaler_on_cuda(data_dir, tmp_path):
    result = run_script("train.py", *train_args(data_dir, tmp_path / "run", "--fp16", "--num-epochs", 1,
                                                "--device", "cuda"), home=tmp_path)
    assert "precision fp16 autocast with GradScaler (CUDA)" in result.stderr
    assert (tmp_path / "run" / "test_results.json").exists()
