"""What this CPU can do natively, where it decides how fast an encoder backend runs.

The ``bf16`` backend is fast only with bfloat16 instructions (x86 AVX512-BF16 or AMX, Arm's BF16
extension); elsewhere torch emulates it and it runs several times *slower* than fp32 (on an AVX2-only
AMD EPYC, benchmarks/results/encoder_scale_avx2.md measures it).
"""

from __future__ import annotations

import functools
import platform
import warnings
from pathlib import Path

__all__ = ["cpu_flags", "cpu_model", "native_bf16", "warn_if_emulated_bf16"]

#: /proc/cpuinfo flags that mean bfloat16 matmuls run in hardware
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def _field(text: str, names: tuple[str, ...]) -> str | None:
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in names:
            return value.strip()
    return None


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str] | None:
    """The first CPU's feature flags (x86 ``flags``, Arm ``Features``), or None where unknown (not Linux)."""
    value = _field(_cpuinfo() if cpuinfo is None else cpuinfo, ("flags", "features"))
    return None if value is None else frozenset(value.lower().split())


def cpu_model(cpuinfo: str | None = None) -> str:
    """A readable CPU name (``model name`` on Linux, else the platform's processor string)."""
    return _field(_cpuinfo() if cpuinfo is None else cpuinfo, ("model name",)) or platform.processor() or "unknown"


def native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU has bfloat16 instructions; None where its flags cannot be read."""
    flags = cpu_flags(cpuinfo)
    return None if flags is None else bool(flags & BF16_FLAGS)


def warn_if_emulated_bf16() -> None:
    """Warn that the bf16 backend on this CPU is emulated by torch, several times slower than fp32."""
    from avrec.errors import PerformanceWarning

    if native_bf16() is False:
        warnings.warn(PerformanceWarning(
            f"the bf16 encoder backend is emulated on this CPU ({cpu_model()}: no AVX512-BF16, AMX or Arm BF16), "
            "so it runs several times slower than fp32 (measured 0.17x on an AVX2-only AMD EPYC); use the "
            "default fp32 backend, @onnx-int8 or @int8 here"), stacklevel=5)
