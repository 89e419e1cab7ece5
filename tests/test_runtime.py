import pytest
import torch

from src.errors import ConfigError
from src.runtime import select_device, select_precision
from tests.conftest import run_script, train_args


def test_fp32_unless_mixed_precision_is_asked_for():
    precision = select_precision(False, torch.device("cuda"))
    assert precision.autocast_dtype is None and not precision.use_grad_scaler


def test_fp16_on_cuda_uses_autocast_fp16_with_grad_scaler():
    precision = select_precision(True, torch.device("cuda"))
    assert precision.autocast_dtype == torch.float16 and precision.use_grad_scaler


def test_fp16_on_cpu_becomes_bf16_without_scaler_and_says_so():
    precision = select_precision(True, torch.device("cpu"))
    assert precision.autocast_dtype == torch.bfloat16 and not precision.use_grad_scaler
    assert "bf16" in precision.description and "CUDA-only" in precision.description


def test_device_selection():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device is available"):
            select_device("cuda")


def test_fp16_flag_trains_with_bf16_autocast_on_cpu(data_dir, tmp_path):
    result = run_script("train.py", *train_args(data_dir, tmp_path / "run", "--fp16", "--num-epochs", 1,
                                                "--device", "cpu"), home=tmp_path)
    assert "precision bf16 autocast" in result.stderr
    assert (tmp_path / "run" / "test_results.json").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_flag_trains_with_grad_scaler_on_cuda(data_dir, tmp_path):
    result = run_script("train.py", *train_args(data_dir, tmp_path / "run", "--fp16", "--num-epochs", 1,
                                                "--device", "cuda"), home=tmp_path)
    assert "precision fp16 autocast with GradScaler (CUDA)" in result.stderr
    assert (tmp_path / "run" / "test_results.json").exists()
