"""Device and numeric precision: decided once per run, with the reason logged."""

import contextlib
from dataclasses import dataclass

import torch

from src.errors import ConfigError


@dataclass
class Precision:
    autocast_dtype: torch.dtype | None  # None: plain fp32
    use_grad_scaler: bool  # only fp16 needs loss scaling; bf16 has fp32's exponent range
    description: str


def select_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but no CUDA device is available (use --device auto or cpu)")
    return torch.device(name)


def select_precision(mixed_precision, device):
    """--fp16: fp16 autocast + GradScaler on CUDA; on CPU, where fp16 autocast is slow or missing, bf16 autocast."""
    if not mixed_precision:
        return Precision(None, False, "fp32")
    if device.type == "cuda":
        return Precision(torch.float16, True, "fp16 autocast with GradScaler (CUDA)")
    return Precision(torch.bfloat16, False, "bf16 autocast (--fp16 asked for, but fp16 autocast is CUDA-only; "
                                             "bf16 is the CPU's mixed precision and needs no GradScaler)")


def autocast(device, precision):
    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.autocast_dtype)
