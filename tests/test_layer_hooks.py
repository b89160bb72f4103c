"""ModelParts.capture / replace against HF's output_hidden_states, on every supported architecture."""

from __future__ import annotations

import pytest
import torch
from tiny import SUPPORTED, forward_states, padded_batch, tiny_lm


def hook_count(lm) -> int:
    """Hooks on the layers and the final norm (HF may keep its own there: compare before/after)."""
    parts = lm.parts
    modules = [*parts.layers, parts.final_norm]
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in modules)


@pytest.mark.parametrize("arch", SUPPORTED)
def test_capture_equals_output_hidden_states(arch):
    lm = tiny_lm(arch)
    inputs = padded_batch(lm)
    _, states = forward_states(lm, inputs)
    before = hook_count(lm)
    parts = lm.parts
    assert len(states) == parts.num_layers
    captured = {}
    with parts.capture(range(parts.num_layers), lambda i, h: captured.setdefault(i, h.clone())):
        forward_states(lm, inputs)
    assert sorted(captured) == list(range(parts.num_layers))
    for i in range(parts.num_layers):  # HF's last entry is after the final norm, as ours
        torch.testing.assert_close(captured[i], states[i], rtol=0, atol=0)
    assert hook_count(lm) == before


@pytest.mark.parametrize("arch", SUPPORTED)
def test_identity_replace_keeps_logits(arch):
    lm = tiny_lm(arch)
    inputs = padded_batch(lm)
    logits, _ = forward_states(lm, inputs)
    before = hook_count(lm)
    for layer in range(lm.parts.num_layers):
        with lm.parts.replace(layer, lambda h: h.clone()):
            replaced, _ = forward_states(lm, inputs)
        torch.testing.assert_close(replaced, logits, rtol=0, atol=0)
    assert hook_count(lm) == before


def test_replace_is_seen_by_capture_and_later_layers():
    lm = tiny_lm("llama")
    inputs = padded_batch(lm)
    logits, states = forward_states(lm, inputs)
    before = hook_count(lm)
    layer = 2
    seen = {}
    with (
        lm.parts.capture([layer], lambda i, h: seen.setdefault(i, h.clone())),
        lm.parts.replace(layer, lambda h: h + 1.0),  # registered later, runs first
    ):
        changed, changed_states = forward_states(lm, inputs)
    torch.testing.assert_close(seen[layer], states[layer] + 1.0)
    torch.testing.assert_close(changed_states[layer], states[layer] + 1.0)
    for i in range(layer):
        torch.testing.assert_close(changed_states[i], states[i], rtol=0, atol=0)
    assert not torch.allclose(changed, logits)
    assert hook_count(lm) == before


@pytest.mark.parametrize("wanted", [[0], [1, 0], [3]])
def test_capture_stops_after_deepest_layer(wanted):
    lm = tiny_lm("llama")  # 3 blocks, layers 0..3
    parts = lm.parts
    inputs = padded_batch(lm)
    _, states = forward_states(lm, inputs)
    before = hook_count(lm)
    ran = []
    probes = [
        b.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
        for i, b in enumerate(parts.layers)
    ]
    captured, after = {}, []
    try:
        with parts.capture(wanted, lambda i, h: captured.setdefault(i, h.clone()), stop=True):
            with torch.no_grad():
                parts.backbone(**inputs, use_cache=False)
            after.append(True)  # abandoned: the forward never returns
    finally:
        for p in probes:
            p.remove()
    deepest = max(wanted)
    assert not after
    assert ran == list(range(min(deepest, parts.num_decoder_layers)))
    for i in wanted:
        torch.testing.assert_close(captured[i], states[i], rtol=0, atol=0)
    assert hook_count(lm) == before


def test_hooks_removed_on_error_and_bad_layers():
    lm = tiny_lm("llama")
    inputs = padded_batch(lm)
    forward_states(lm, inputs)
    before = hook_count(lm)

    def boom(i, h):
        raise KeyError("inside a hook")

    with pytest.raises(KeyError, match="inside a hook"), lm.parts.capture([1], boom):
        forward_states(lm, inputs)
    assert hook_count(lm) == before
    with (
        pytest.raises(ValueError, match=r"layer 4 is out of range 0\.\.3"),
        lm.parts.replace(4, lambda h: h),
    ):
        pass
    with pytest.raises(ValueError, match="at least one layer"), lm.parts.capture([], boom):
        pass
    assert hook_count(lm) == before
