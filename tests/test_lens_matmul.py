"""The logit lens' CPU candidate matmul: both paths give the same top-k; ``auto`` follows the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import MAX_PARAMS
from transformers import AutoModelForCausalLM, LlamaConfig

import probing.models.lens_matmul as choice
from probing.errors import ProbingError
from probing.models import model_parts

LAYERS = 3  # 2 decoder blocks + embeddings


@pytest.fixture
def parts():
    """A tiny random Llama with a 4,000-word vocabulary (so the top-k has near-competitors)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=4000,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=LAYERS - 1,
        num_attention_heads=4,
    )
    model = AutoModelForCausalLM.from_config(config).requires_grad_(False)
    assert sum(p.numel() for p in model.parameters()) < MAX_PARAMS
    return model_parts(model)


@pytest.fixture
def fresh_auto():
    """``auto`` decides again in this test (its choice is cached per process)."""
    choice.auto_lens_matmul.cache_clear()
    yield
    choice.auto_lens_matmul.cache_clear()


def lens_all_layers(parts, hidden, k=5):
    return [parts.lens_topk(hidden[:, layer], layer, k) for layer in range(LAYERS)]


def test_forced_paths_give_the_float32_top_k(parts, monkeypatch):
    """Each forced path runs (bfloat16 builds its weight copy, float32 never does) and both return
    a plain float32 top-k: same ids, logits equal to float32 rounding."""
    hidden = torch.randn(8, LAYERS, 2, 32) * 3
    results = {}
    for path in ("float32", "bfloat16"):
        monkeypatch.setenv(choice.ENV, path)
        parts._weight_bf16 = None
        results[path] = lens_all_layers(parts, hidden)
        assert (parts._weight_bf16 is not None) == (path == "bfloat16")
    for layer in range(LAYERS):
        ref = parts.lens(hidden[:, layer], layer).topk(5)
        for path, per_layer in results.items():
            ids, values = per_layer[layer]
            assert ids.shape == values.shape == (8, 2, 5), path
            np.testing.assert_array_equal(ids.numpy(), ref.indices.numpy(), err_msg=path)
            np.testing.assert_allclose(
                values.numpy(), ref.values.numpy(), rtol=1e-5, atol=1e-5, err_msg=path
            )


def test_unknown_value_is_a_user_error(monkeypatch):
    monkeypatch.setenv(choice.ENV, "fp16")
    with pytest.raises(ProbingError, match="PROBING_LENS_MATMUL must be one of auto, bfloat16"):
        choice.lens_matmul()


def fake_cpuinfo(tmp_path, monkeypatch, text):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    monkeypatch.setattr(choice, "CPUINFO", path)
    monkeypatch.delenv(choice.ENV, raising=False)


def test_auto_is_float32_without_bf16_flags(tmp_path, monkeypatch, fresh_auto):
    """An AVX2 CPU: float32 at once, nothing measured."""
    fake_cpuinfo(tmp_path, monkeypatch, "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n")

    def no_measure(*args, **kwargs):
        raise AssertionError("measured although the flags decide")

    monkeypatch.setattr(choice, "measure_bf16_speedup", no_measure)
    chosen = choice.lens_matmul()
    assert chosen.path == "float32"
    assert "avx512_bf16" in chosen.reason
    assert choice.cpu_capability().endswith("(no bf16 flags)")


@pytest.mark.parametrize(
    "cpuinfo",
    [
        "flags\t\t: avx2 avx512f avx512_bf16\n",  # native bfloat16: measured to confirm
        "Features\t: fp asimd bf16\n",  # not x86: measured
    ],
)
@pytest.mark.parametrize(("speedup", "path"), [(3.6, "bfloat16"), (1.0, "float32")])
def test_auto_measures_otherwise(tmp_path, monkeypatch, fresh_auto, cpuinfo, speedup, path):
    fake_cpuinfo(tmp_path, monkeypatch, cpuinfo)
    calls = []
    monkeypatch.setattr(choice, "measure_bf16_speedup", lambda: calls.append(1) or speedup)
    assert choice.lens_matmul().path == path
    assert choice.lens_matmul().path == path
    assert calls == [1]  # once per process


def test_forcing_overrides_auto(tmp_path, monkeypatch, fresh_auto):
    fake_cpuinfo(tmp_path, monkeypatch, "flags\t\t: avx2\n")
    monkeypatch.setenv(choice.ENV, "bfloat16")
    assert choice.lens_matmul() == choice.LensMatmulChoice(
        "bfloat16", "forced by PROBING_LENS_MATMUL=bfloat16"
    )


def test_measurement_runs():
    assert choice.measure_bf16_speedup(rows=4, dim=16, vocab=64, repeats=1) > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_unembedding_gets_a_contiguous_input_from_a_slice(parts, dtype):
    """Extraction hands the lens slices of its stacked layers (``stacked[:, :-1]``): the unembedding
    must see a contiguous copy (the CPU's bfloat16 matmul is ~300x slower on a strided view), with
    the top-k of the contiguous input."""
    parts.unembed.to(dtype)
    parts.final_norm.to(dtype)
    stacked = (torch.randn(4, LAYERS, 2, 32) * 3).to(dtype)
    seen = []
    hook = parts.unembed.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        for layer in (0, LAYERS - 1):
            view = stacked[:, :-1] if layer == 0 else stacked[:, -1:]
            assert not view.is_contiguous()
            parts.lens(view, layer)
            ids, values = parts.lens_topk(view, layer, 3)
            ref_ids, ref_values = parts.lens_topk(view.contiguous(), layer, 3)
            assert torch.equal(ids, ref_ids) and torch.equal(values, ref_values)
    finally:
        hook.remove()
    assert seen and all(x.is_contiguous() for x in seen)
