"""Device and dtype choice, explicit and never silent."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

logger = logging.getLogger(__name__)

#: The device strings a critic accepts (N: a CUDA device index, 0 .. device_count - 1).
DEVICE_FORMS = "'cpu', 'cuda', 'cuda:N' or 'mps'"

_DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def resolve_device(device: str | Any | None) -> str:
    """Pick a device. ``None`` picks cuda > mps > cpu (and logs it); an explicit device must exist.

    Raises:
        ValueError: for an unknown device string, an index on a device other than CUDA (``"cpu:7"``), or a
            device that is not available here (never a silent switch).

    Examples:
        >>> resolve_device("cpu")
        'cpu'
    """
    import torch

    if device is None:
        if torch.cuda.is_available():
            chosen = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            chosen = "mps"
        else:
            chosen = "cpu"
        logger.info("cprs: no device given, using %s", chosen)
        return chosen
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r}; expected {DEVICE_FORMS}") from e
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r}; expected {DEVICE_FORMS}")
    if parsed.index is not None and parsed.type != "cuda":
        # torch accepts "cpu:7" and "mps:3" and ignores the index; a typo like that must not pass silently.
        raise ValueError(f"device {device!r} has an index, which only CUDA devices take; expected {DEVICE_FORMS}")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for but CUDA is not available on this machine")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif parsed.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ValueError(f"device {device!r} was asked for but MPS is not available on this machine")
    return str(parsed)


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when this CPU has AMX (``amx_bf16`` in ``/proc/cpuinfo``): see :func:`bf16_is_fast`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return bf16_is_fast(flags)


def bf16_is_fast(flags: str) -> bool:
    """Whether bf16 beats fp32 for the critic on a CPU with these ``/proc/cpuinfo`` flags: only with AMX.

    Measured: on a 2-core Xeon with AMX, bf16 ran the MiniLM critic about 2.5x faster than fp32; on a 2-core Xeon
    with AVX-512-BF16 but no AMX, ``compress`` of a 120K-character essay at 10x (2 threads, best of 3-5, torch
    2.13.0, 2026-12-02, ``python -m benchmarks.cpu_dtype``) ran at 0.75x-0.90x of fp32's speed in four runs. On AVX2
    alone bf16 is far slower.

    Examples:
        >>> bf16_is_fast("flags : fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile")
        True
        >>> bf16_is_fast("flags : fpu avx2 avx512f avx512_bf16")
        False
    """
    return "amx_bf16" in flags.split()


def resolve_dtype(dtype: str | Any, device: str, critic_kind: str = "encoder") -> Any:
    """Map ``"auto"`` / a name / a ``torch.dtype`` to a ``torch.dtype``.

    ``"auto"``: on CUDA, float16 for decoder critics (the official QwenLong-CPRS server runs the released model in
    fp16: bf16 moves its probabilities by about 0.013 and flips about one argmax in 231; ask for bfloat16
    explicitly if you prefer it), bfloat16 for encoder critics where supported (else float16); bfloat16 on a CPU
    with AMX (measured ~2.5x faster, same metrics; :func:`bf16_is_fast`); float32 elsewhere, AVX-512-BF16 without
    AMX included (bf16 was 0.75-0.90x of fp32's speed there).

    Raises:
        ValueError: for an unknown dtype name.
    """
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.startswith("cuda"):
            if critic_kind == "decoder":
                return torch.float16
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device == "cpu" and cpu_has_fast_bf16():
            return torch.bfloat16
        return torch.float32
    name = _DTYPE_NAMES.get(str(dtype).replace("torch.", ""))
    if name is None:
        raise ValueError(f"unknown dtype {dtype!r}; expected 'auto', 'float32', 'bfloat16' or 'float16'")
    return getattr(torch, name)
