"""Extraction with the prompts' shared head run once (its cache repeated) against running each batch
whole: every positions mode, the lens, the next-token logits; batched == one at a time."""

from __future__ import annotations

import logging

import pytest
import torch
from tiny import SUPPORTED, tiny_lm

from probing.features.activations import ActivationReader
from probing.models.batching import inputs_after_head, plain_cache
from probing.prompts import render

SYSTEM = "Be brief."
PROMPTS = ["hi", "Tell me a story.", "Why is the sky blue?", "x", "What is 2 + 2?"]
K = 20  # longer than the shortest prompt's tail after the head (14 tokens)
SLIDING = {"gemma2", "gemma3_text", "mistral"}  # sliding-window layers (window 64 in tiny.py)


def chat_ids(lm, prompts=PROMPTS, system=SYSTEM) -> list[list[int]]:
    ids = render(lm.tokenizer, prompts, "chat", system_prompt=system).ids
    return sorted(ids, key=len, reverse=True)


def assert_same(a, b, atol=1e-5):
    torch.testing.assert_close(a.hidden, b.hidden, atol=atol, rtol=1e-5)
    torch.testing.assert_close(a.lens_logits, b.lens_logits, atol=atol, rtol=1e-5)
    assert torch.equal(a.lens_ids, b.lens_ids)
    if a.logits is not None:
        torch.testing.assert_close(a.logits, b.logits, atol=atol, rtol=1e-5)


@pytest.mark.parametrize("arch", SUPPORTED)
@pytest.mark.parametrize(
    ("positions", "k"), [("last", K), ("mean", K), ("last_k", K), ("last_k", 3)]
)
def test_shared_head_matches_whole_batches(arch, positions, k, monkeypatch):
    lm = tiny_lm(arch)
    ids = chat_ids(lm)
    whole = ActivationReader(lm, positions, k=k, top_k=3)
    shared = ActivationReader(lm, positions, k=k, top_k=3)
    n = shared.share_prefix(ids)
    assert n > 4 and shared.head is not None
    assert shared.head.fits(ids), "the head must be used (widths stay inside the sliding window)"
    reaches_head = min(len(s) for s in ids) - n < k
    assert reaches_head == (k == K), "last_k 20 reaches into the head, last_k 3 does not"
    rebuilt = []  # the head's states are put back only where a selected position needs them
    states = shared.head.states
    monkeypatch.setattr(shared.head, "states", lambda *a: rebuilt.append(1) or states(*a))
    ref = whole(ids, logits=True)
    out = shared(ids, logits=True)
    assert_same(ref, out)
    assert bool(rebuilt) == (positions == "mean" or (positions == "last_k" and reaches_head))
    for i, s in enumerate(ids):  # one at a time (no padding) == batched (padding after the head)
        one = shared([s], logits=True)
        torch.testing.assert_close(one.hidden[0], out.hidden[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(one.logits[0], out.logits[i], atol=1e-5, rtol=1e-5)


def test_mean_includes_the_head_tokens():
    """The mean over prompt tokens is HF's mean over the whole unpadded prompt, head included."""
    lm = tiny_lm("llama")
    ids = chat_ids(lm)
    reader = ActivationReader(lm, "mean")
    assert reader.share_prefix(ids) > 4
    out = reader(ids)
    for i, s in enumerate(ids):
        with torch.no_grad():
            ref = lm.model(torch.tensor([s]), output_hidden_states=True).hidden_states
        for layer, h in enumerate(ref):
            torch.testing.assert_close(out.hidden[i, layer, 0], h[0].mean(0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", sorted(SLIDING))
def test_sliding_window_too_short_for_the_batch_runs_it_whole(arch):
    """A batch wider than the sliding window (64) runs whole; the results are the same."""
    lm = tiny_lm(arch)
    ids = chat_ids(lm, PROMPTS + ["a long prompt, " * 5])
    reader = ActivationReader(lm, "mean", top_k=2)
    assert reader.share_prefix(ids) > 4
    assert not reader.head.fits(ids) and reader.head.fits(ids[1:])
    assert_same(reader(ids), ActivationReader(lm, "mean", top_k=2)(ids))


def test_batches_that_do_not_start_with_the_head_run_whole():
    lm = tiny_lm("qwen2")
    reader = ActivationReader(lm, "last", top_k=2)
    assert reader.share_prefix(chat_ids(lm)) > 4
    other = chat_ids(lm, system="Another system prompt.")
    assert not reader.head.fits(other)
    assert_same(reader(other), ActivationReader(lm, "last", top_k=2)(other))


def test_nothing_shared_without_a_common_head():
    lm = tiny_lm("llama")
    reader = ActivationReader(lm)
    assert reader.share_prefix([[5, 6, 7, 8, 9, 10], [5, 6, 7, 9, 10]]) == 0  # 3 < MIN_SHARED
    assert reader.head is None


def test_padding_sits_between_head_and_tail():
    """Mask ``head | padding | tail``; position ids count real tokens only."""
    lm = tiny_lm("llama")
    reader = ActivationReader(lm)
    assert reader.share_prefix([[5, 6, 7, 8, 9, 10, 11], [5, 6, 7, 8, 12]]) == 4
    inputs = inputs_after_head(
        lm.model, reader.head.cache, reader.head.mask, [[9, 10, 11], [12]], 0
    )
    assert inputs["input_ids"].tolist() == [[9, 10, 11], [0, 0, 12]]
    assert inputs["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 1]]
    assert inputs["position_ids"].tolist() == [[4, 5, 6], [3, 3, 4]]
    assert plain_cache(reader.head.cache) and reader.head.cache.layers[0].keys.shape[0] == 1


def test_extraction_shares_the_chat_head(tmp_path, caplog):
    from probing.features import FeatureFile
    from probing.features.extract import ExtractConfig, extract
    from probing.prompts import PromptSource

    src = tmp_path / "p.txt"
    src.write_text("\n".join(PROMPTS) + "\n")
    lm = tiny_lm("llama")
    cfg = ExtractConfig(
        prompts=[PromptSource(path=str(src), label="any")],
        output=str(tmp_path / "f.h5"),
        system_prompt=SYSTEM,
        storage_dtype="float32",
        progress=False,
        batch_size=2,
    )
    with caplog.at_level(logging.INFO, logger="probing.features.extract"):
        ff = FeatureFile(extract(cfg, lm=lm))
    assert any("run once" in r.message for r in caplog.records)
    order = sorted(range(len(PROMPTS)), key=lambda i: ff.column("prompt_index")[i])
    whole = ActivationReader(lm, "last")
    for row in order:
        ids = lm.tokenizer(ff.column("rendered")[row], add_special_tokens=False).input_ids
        ref = whole([ids]).hidden[0].numpy()
        torch.testing.assert_close(
            torch.from_numpy(ff.column("hidden")[row]), torch.from_numpy(ref), atol=1e-5, rtol=1e-5
        )
