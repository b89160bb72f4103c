"""``--model.dtype auto``: bfloat16 where the hardware computes it natively, float32 elsewhere, chosen
from the CPU's flags (the same machine always gets the same dtype) and recorded as the concrete dtype."""

from __future__ import annotations

import json

import pytest
from tiny import save_tiny

from probing.cli import main
from probing.models import precision
from probing.models.config import ModelConfig
from probing.models.load import model_identity


@pytest.mark.parametrize(
    ("flags", "cap", "dtype", "why"),
    [
        ({"avx2", "avx512f", "avx512_bf16"}, None, "bfloat16", "a CPU with avx512_bf16"),
        ({"avx2", "amx_bf16"}, "AVX512_CORE_AMX", "bfloat16", "a CPU with amx_bf16"),
        ({"avx2", "fma"}, None, "float32", "a CPU without avx512_bf16 or amx_bf16"),
        (None, None, "float32", "CPU flags unknown"),
        ({"avx512_bf16"}, "AVX2", "float32", "ONEDNN_MAX_CPU_ISA=AVX2 caps oneDNN below bfloat16"),
    ],
)  # fmt: skip
def test_auto_follows_the_cpu(monkeypatch, flags, cap, dtype, why):
    monkeypatch.setattr(precision, "cpu_flags", lambda: None if flags is None else frozenset(flags))
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert precision.auto_dtype("cpu") == (dtype, why)


def test_auto_on_a_gpu_without_one_is_float32(monkeypatch):
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: False)
    assert precision.auto_dtype("cuda") == ("float32", "a GPU without bfloat16")


@pytest.mark.parametrize(("flags", "dtype"), [({"avx512_bf16"}, "bfloat16"), ({"avx2"}, "float32")])
def test_extract_records_the_dtype_auto_chose(tmp_path, monkeypatch, capsys, caplog, flags, dtype):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    model = save_tiny(tmp_path / "tiny", "llama")
    assert model_identity(ModelConfig(name=str(model), dtype="auto"))["dtype"] == dtype
    prompts = tmp_path / "p.txt"
    prompts.write_text("how do I bake bread\nhow do I make a kite\n")
    out = tmp_path / "f.h5"
    argv = ["extract", "--model.name", str(model), "--model.dtype", "auto", "--prompts",
            f"[{{path: {prompts}, label: normal}}]", "--output", str(out), "--progress", "false"]  # fmt: skip
    caplog.set_level("INFO", logger="probing")
    assert main(argv) == 0
    assert f"--model.dtype auto: {dtype}" in caplog.text
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == dtype
