"""CPU capability checks: the bf16 encoder backend warns where the CPU would only emulate bfloat16."""

from __future__ import annotations

import warnings

from avrec.encoders import TextEncoder, hardware
from avrec.errors import PerformanceWarning

X86_AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\n"
X86_AMX = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ARM_BF16 = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes sve bf16 i8mm\n"


def test_native_bf16_reads_the_cpu_flags():
    assert hardware.native_bf16(X86_AVX2) is False
    assert hardware.native_bf16(X86_AMX) is True
    assert hardware.native_bf16(ARM_BF16) is True
    assert hardware.native_bf16("no flags here") is None  # unknown (e.g. not Linux): no claim either way
    assert hardware.cpu_model(X86_AMX).startswith("Intel(R) Xeon(R)")
    assert "avx2" in hardware.cpu_flags(X86_AVX2)


def _encode_quietly(encoder: TextEncoder) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder.encode(["Heat (1995). Genres: Action, Crime."], show_progress=False)
    return [w for w in caught if issubclass(w.category, PerformanceWarning)]


def test_bf16_backend_warns_on_a_cpu_without_bfloat16(monkeypatch):
    monkeypatch.setattr(hardware, "native_bf16", lambda cpuinfo=None: False)
    # a max_length no other test uses, so this load is not one an earlier test cached
    slow = _encode_quietly(TextEncoder("default", backend="bf16", max_length=33))
    assert len(slow) == 1 and "emulated" in str(slow[0].message) and "@int8" in str(slow[0].message)
    monkeypatch.setattr(hardware, "native_bf16", lambda cpuinfo=None: True)
    assert _encode_quietly(TextEncoder("default", backend="bf16", max_length=34)) == []
    assert _encode_quietly(TextEncoder("default", max_length=35)) == []  # fp32 never warns
