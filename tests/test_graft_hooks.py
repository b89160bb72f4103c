"""Grafting hooks against references: identity graft, untouched earlier layers, prefill only."""

from __future__ import annotations

import pytest
import torch
from tiny import SUPPORTED, forward_states, padded_batch, tiny_lm

from probing.errors import ProbingError
from probing.grafting import graft

ARCHS = SUPPORTED  # every architecture of probing.models.lookup


@pytest.mark.parametrize("arch", ARCHS)
def test_identity_graft_reproduces_logits(arch):
    lm = tiny_lm(arch)
    inputs = padded_batch(lm)
    logits, states = forward_states(lm, inputs)
    for layer in range(lm.parts.num_layers):
        with graft(lm.parts, layer, states[layer][:, -1]):
            grafted, _ = forward_states(lm, inputs)
        torch.testing.assert_close(grafted, logits, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_graft_changes_only_layers_from_l(arch):
    lm = tiny_lm(arch)
    inputs = padded_batch(lm)
    logits, states = forward_states(lm, inputs)
    donor = torch.randn(lm.model.config.hidden_size) * 5
    for layer in range(lm.parts.num_layers):
        with graft(lm.parts, layer, donor):
            grafted, gstates = forward_states(lm, inputs)
        real = inputs["attention_mask"][:, :-1].bool()  # padding queries see no real key: skip them
        for i in range(layer):
            torch.testing.assert_close(gstates[i], states[i], rtol=0, atol=0)
        # falcon records hidden_states[0] before block 1's pre-hooks run: its layer-0 graft shows
        # only from layer 1 on (checked by the logits below)
        if layer > 0 or arch != "falcon":
            torch.testing.assert_close(gstates[layer][:, -1], donor.expand(3, -1), rtol=0, atol=0)
        torch.testing.assert_close(
            gstates[layer][:, :-1][real], states[layer][:, :-1][real], rtol=0, atol=0
        )
        assert not torch.allclose(grafted[:, -1], logits[:, -1])
        torch.testing.assert_close(grafted[:, :-1][real], logits[:, :-1][real], rtol=0, atol=0)


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_removed_and_prefill_only():
    lm = tiny_lm("llama")
    inputs = padded_batch(lm)
    logits, _ = forward_states(lm, inputs)
    hooks_before = hook_count(lm.model)  # transformers adds its own capture hooks on first use
    with graft(lm.parts, 2, torch.zeros(32)):
        first, _ = forward_states(lm, inputs)
        second, _ = forward_states(lm, inputs)  # a later pass of the same generation is not grafted
    torch.testing.assert_close(second, logits)
    assert not torch.allclose(first, logits)
    with pytest.raises(RuntimeError), graft(lm.parts, 1, torch.zeros(32)):
        raise RuntimeError("boom")
    after, _ = forward_states(lm, inputs)
    torch.testing.assert_close(after, logits)
    assert hook_count(lm.model) == hooks_before


def test_per_prompt_vectors_and_generation():
    lm = tiny_lm("llama")
    inputs = padded_batch(lm)
    donors = torch.randn(3, 32)
    with graft(lm.parts, 3, donors):
        _, states = forward_states(lm, inputs)
    torch.testing.assert_close(states[3][:, -1], donors)
    with torch.no_grad(), graft(lm.parts, 1, donors):
        out = lm.model.generate(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            max_new_tokens=4,
            do_sample=False,
            pad_token_id=0,
        )
    assert out.shape == (3, inputs["input_ids"].shape[1] + 4)


@pytest.mark.parametrize(
    ("layer", "vector", "match"),
    [
        (9, torch.zeros(32), "out of range"),
        (-1, torch.zeros(32), "out of range"),
        (1, torch.zeros(31), r"expected \[32\]"),
        (1, torch.zeros(2, 2, 32), "expected"),
    ],
)
def test_bad_graft(layer, vector, match):
    lm = tiny_lm("llama")
    with pytest.raises(ProbingError, match=match), graft(lm.parts, layer, vector):
        pass
