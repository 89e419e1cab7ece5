"""Device and numeric precision: decided once per run, with the reason logged."""

import contextlib
import logging
import os
import platform
from dataclasses import dataclass

import torch

from math_llm.errors import ConfigError

log = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda")  # auto: CUDA when present


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


def machine_description(device):
    """'NVIDIA H200' or 'AMD EPYC, 2 CPUs, 2 torch threads': what a measurement ran on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    return f"{model}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"


def cpu_has_native_bf16():
    """avx512_bf16 or AMX: without them bf16 matrix products are emulated and slower than fp32."""
    return any(getattr(torch.cpu, check, lambda: False)()
               for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def precision_flag_problems(fp16, bf16):
    """The rule of the --fp16 and --bf16 flags, for the __post_init__ of every config that has them."""
    return ["--fp16 and --bf16 exclude each other: choose one"] if fp16 and bf16 else []


def select_precision(device, fp16=False, bf16=False):
    """--fp16: fp16 autocast + GradScaler on CUDA; on CPU, where fp16 autocast is not the fast path, bf16 autocast.
    --bf16: bf16 autocast on either, no scaler. Master weights and optimizer state stay fp32 in every case."""
    if not (fp16 or bf16):
        return Precision(None, False, "fp32")
    if device.type == "cuda" and fp16:
        return Precision(torch.float16, True, "fp16 autocast with GradScaler (CUDA)")
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise ConfigError("--bf16: this GPU has no bf16 support; use --fp16")
        return Precision(torch.bfloat16, False, "bf16 autocast (CUDA)")
    if not cpu_has_native_bf16():
        log.warning("this CPU has no native bf16 instructions (avx512_bf16 or AMX): bf16 autocast is emulated here, "
                    "10-35x slower than fp32 (docs/speed.md); --no-bf16 trains in fp32")
    if fp16:
        return Precision(torch.bfloat16, False, "bf16 autocast (--fp16 asked for, but fp16 autocast is CUDA-only; "
                                                 "bf16 is the CPU's mixed precision and needs no GradScaler)")
    return Precision(torch.bfloat16, False, "bf16 autocast (CPU)")


def synchronize(device):
    """Waits for queued CUDA work, so that a clock read afterwards measures it; nothing to wait for on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device, precision):
    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.autocast_dtype)
