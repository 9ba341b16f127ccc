"""dtype="auto" on CPUs: bf16 only where it was measured faster than fp32 (AMX)."""

from __future__ import annotations

import pytest

from cprs_integrations.models.devices import bf16_is_fast, resolve_dtype

AMX = "flags : fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"
AVX512_BF16 = "flags : fpu sse2 avx2 avx512f avx512_bf16"  # bf16 was 0.75-0.90x of fp32 there
AVX2 = "flags : fpu sse2 avx2"


@pytest.mark.parametrize(("flags", "fast"), [(AMX, True), (AVX512_BF16, False), (AVX2, False), ("", False)])
def test_bf16_is_fast_only_with_amx(flags, fast):
    assert bf16_is_fast(flags) is fast


def test_a_flag_is_a_whole_word():
    assert not bf16_is_fast("flags : no_amx_bf16_here")


def test_auto_follows_the_cpu(monkeypatch):
    torch = pytest.importorskip("torch")
    from cprs_integrations.models import devices

    for flags, expected in ((AMX, torch.bfloat16), (AVX512_BF16, torch.float32)):
        monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda flags=flags: bf16_is_fast(flags))
        assert resolve_dtype("auto", "cpu") == expected
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16  # an explicit dtype is kept
