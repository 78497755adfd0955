"""Where and in what arithmetic a model runs: the device and its memory, bf16/fp16 autocast, and
CPU threads."""

from __future__ import annotations

import os
from functools import cache

import torch

from charnn.errors import SettingError, literal


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SettingError(
            "{device} cuda asked for, but PyTorch sees no CUDA GPU: use {device} cpu"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise SettingError("{device} mps asked for, but this machine has no MPS: use {device} cpu")
    return torch.device(name)


# Bytes a parameter takes in training, at least: fp32 weight, gradient and AdamW's two averages
TRAINING_BYTES_PER_PARAMETER = 16


def memory_of(device: torch.device) -> int | None:
    """The memory a model on `device` lives in, in bytes: the GPU's, or the machine's (also for
    MPS, whose memory is the machine's); None where the system does not say."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        return None


def check_fits(parameters: int, shape: str, device: torch.device) -> None:
    """Refuse, before anything is allocated, a model that could not train in `device`'s memory
    (a mistyped hidden size or layer count would otherwise build for minutes, then fail)."""
    needed, memory = parameters * TRAINING_BYTES_PER_PARAMETER, memory_of(device)
    if memory is not None and needed > memory:
        raise SettingError(
            f"a {literal(shape)} model has {parameters:,} parameters: training it needs at least "
            f"{needed / 2**30:,.1f} GiB (weights, gradients and AdamW's two averages), more than "
            f"the {memory / 2**30:,.1f} GiB of memory here; choose a smaller {{hidden_size}} or "
            "fewer {layers}"
        )


NATIVE_BF16_CHECKS = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # in torch.cpu


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), so that bf16 autocast
    trains faster than fp32; elsewhere oneDNN would emulate it. (PyTorch's checks are private:
    a version without them reads as no.)"""
    checks = (getattr(torch.cpu, name, None) for name in NATIVE_BF16_CHECKS)
    return any(check is not None and check() for check in checks)


def use_threads(threads: int | None) -> None:
    """Set PyTorch's CPU threads; None leaves its default (one per core).

    The setting is process-wide and stays after training: `charnn.train` with `threads` set
    changes it for everything else the calling program runs with PyTorch.
    """
    if threads is None:
        return
    cpus = os.cpu_count() or 1
    if threads > cpus:  # each thread beyond a core only slows the others (thousands: a stall)
        raise SettingError(
            f"{{threads}} {threads} is more than this machine's {cpus} CPUs: give at most {cpus}, "
            "or leave it out for one thread per core"
        )
    torch.set_num_threads(threads)


AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def precision_problem(device: torch.device, precision: str, cell: str) -> str | None:
    """Why a `cell` model cannot train in `precision` on `device` (None: it can), in words that
    say what to do instead (a SettingError's template)."""
    if device.type != "cpu" or precision == "fp32":
        return None
    no_bf16 = cell == "lstm" and not cpu_runs_lstm_in_bf16()
    if precision == "fp16":  # oneDNN has no fp16 LSTM kernel
        return (
            f"{{precision}} fp16 needs a GPU; on a CPU use {'fp32' if no_bf16 else 'bf16 or fp32'}"
        )
    if no_bf16:
        return (
            "{precision} bf16: this CPU has no bf16 LSTM kernel (oneDNN's needs AVX-512); use "
            "{precision} fp32, which is faster here anyway"
        )
    return None


def check_precision(device: torch.device, precision: str, cell: str) -> None:
    """Refuse, in one line, a precision that `cell` cannot train in on `device`."""
    problem = precision_problem(device, precision, cell)
    if problem:
        raise SettingError(problem)


@cache  # a fact about this machine's CPU and PyTorch
def cpu_runs_lstm_in_bf16() -> bool:
    """Whether PyTorch's LSTM runs under bf16 autocast on this CPU: oneDNN refuses to build the
    kernel on one without AVX-512 (an AMD EPYC with AVX2 only: "could not create a primitive
    descriptor"), where the other fused cells run. Tried on a one-unit LSTM; the global random
    state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        lstm = torch.nn.LSTM(1, 1)
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                lstm(torch.zeros(1, 1, 1))
        except RuntimeError:
            return False
    return True


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The forward pass in `precision` ("fp32" leaves it alone)."""
    dtype = AUTOCAST.get(precision, torch.float32)
    return torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32")
