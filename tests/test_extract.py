"""Extraction against references: HF hidden states, unbatched runs, the model's own logits."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from tiny import SUPPORTED, extract_texts, tiny_lm

from probing.features import FeatureFile
from probing.features.activations import ActivationReader
from probing.models.lookup import ARCHITECTURES

PROMPTS = [
    "hi",
    "Tell me a story about a lighthouse keeper and a seal.",
    "Why is the sky blue?",
    "x",
    "Summarise the plot of a long novel in three sentences, please, and keep it short.",
    "What is 2 + 2?",
]


def write_txt(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def run(tmp_path, lm, name="f.h5", **kw):
    return extract_texts(tmp_path, lm, PROMPTS, name, **kw)


def by_prompt(ff: FeatureFile, dataset: str) -> np.ndarray:
    """Rows of ``dataset`` back in prompt order."""
    order = np.argsort(ff.column("prompt_index"))
    return ff.column(dataset)[order]


def test_every_supported_architecture_has_a_tiny_model():
    assert sorted(SUPPORTED) == sorted(ARCHITECTURES)


@pytest.mark.parametrize("arch", SUPPORTED)
def test_matches_hf_hidden_states_unpadded(tmp_path, arch):
    """Layer i in the file is HF's hidden_states[i] at the last prompt token, for every layer."""
    lm = tiny_lm(arch)
    ff = run(tmp_path, lm, batch_size=4)
    hidden = by_prompt(ff, "hidden")
    assert ff.num_layers == lm.parts.num_decoder_layers + 1
    rendered = [ff.column("rendered")[i] for i in np.argsort(ff.column("prompt_index"))]
    for i, text in enumerate(rendered):
        ids = lm.tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            ref = lm.model(ids, output_hidden_states=True).hidden_states
        assert len(ref) == ff.num_layers
        for layer, h in enumerate(ref):
            np.testing.assert_allclose(hidden[i, layer, 0], h[0, -1].numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "falcon"])
@pytest.mark.parametrize("positions", ["last", "mean", "last_k"])
def test_batched_equals_one_at_a_time(tmp_path, arch, positions):
    lm = tiny_lm(arch)
    one = run(tmp_path, lm, name="one.h5", batch_size=1, positions=positions, k=3)
    many = run(tmp_path, lm, name="many.h5", batch_size=6, positions=positions, k=3)
    a, b = by_prompt(one, "hidden"), by_prompt(many, "hidden")
    assert a.shape == (len(PROMPTS), lm.parts.num_layers, 3 if positions == "last_k" else 1, 32)
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(
        by_prompt(one, "lens_ids")[:, :, :, 0], by_prompt(many, "lens_ids")[:, :, :, 0]
    )


def test_mean_position_is_mean_of_prompt_tokens(tmp_path):
    lm = tiny_lm("llama")
    ff = run(tmp_path, lm, positions="mean", batch_size=6)
    hidden = by_prompt(ff, "hidden")
    text = [ff.column("rendered")[i] for i in np.argsort(ff.column("prompt_index"))][1]
    ids = lm.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = lm.model(ids, output_hidden_states=True).hidden_states
    np.testing.assert_allclose(hidden[1, 2, 0], ref[2][0].mean(0).numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", SUPPORTED)
def test_last_layer_lens_is_the_models_prediction(tmp_path, arch):
    """Top-1 of the lens at the last layer = argmax of the model's own next-token logits."""
    lm = tiny_lm(arch)
    ff = run(tmp_path, lm, batch_size=3, lens_top_k=4)
    ids_top = by_prompt(ff, "lens_ids")
    logits_top = by_prompt(ff, "lens_logits")
    rendered = [ff.column("rendered")[i] for i in np.argsort(ff.column("prompt_index"))]
    for i, text in enumerate(rendered):
        ids = lm.tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = lm.model(ids).logits[0, -1].float()
        top = logits.topk(4)
        np.testing.assert_array_equal(ids_top[i, -1, 0], top.indices.numpy())
        np.testing.assert_allclose(logits_top[i, -1, 0], top.values.numpy(), atol=1e-3, rtol=1e-4)
    assert np.all(np.diff(logits_top, axis=-1) <= 1e-6), "lens logits are not sorted descending"


def test_reader_keeps_only_selected_positions():
    lm = tiny_lm("llama")
    out = ActivationReader(lm, "last", top_k=2)([[5, 6, 7], [8]])
    assert out.hidden.shape == (2, 4, 1, 32)
    assert out.lens_ids.shape == (2, 4, 1, 2) and out.lens_ids.dtype == torch.int32


def test_file_metadata_and_rows(tmp_path):
    lm = tiny_lm("llama")
    ff = run(tmp_path, lm, batch_size=2)
    meta = ff.meta
    assert meta["complete"] is True
    assert meta["num_layers"] == 4 and meta["num_decoder_layers"] == 3 and meta["hidden_size"] == 32
    assert meta["label_names"] == ["any"] and meta["template"] == "chat"
    assert meta["architecture"] == "llama" and meta["positions"] == "last"
    assert len(meta["prompt_hash"]) == 64 and meta["probing_version"]
    n_tokens = ff.column("n_tokens")
    assert list(n_tokens) == sorted(n_tokens, reverse=True), "rows are not length-sorted"
    assert sorted(ff.column("prompt_index")) == list(range(len(PROMPTS)))
    assert [PROMPTS[i] for i in ff.column("prompt_index")] == ff.column("prompt")
    with h5py.File(ff.path) as f:
        assert f["hidden"].chunks[1] == 1, "a chunk must hold a single layer"
        assert f["rows_done"][0] == len(PROMPTS)


def test_raw_template_and_doubled_bos(tmp_path, caplog):
    lm = tiny_lm("llama", bos=True)
    lm.tokenizer.chat_template = "<bos>" + lm.tokenizer.chat_template
    ff = run(tmp_path, lm, name="chat.h5")
    assert "doubled BOS" in caplog.text
    bos = lm.tokenizer.bos_token_id
    assert all(len(r) for r in ff.column("rendered"))
    raw = run(tmp_path, lm, name="raw.h5", template="raw")
    assert raw.meta["template"] == "raw"
    assert raw.column("rendered") == raw.column("prompt")
    # raw text + the tokenizer's BOS: one more token than the characters
    assert [n - 1 for n in raw.column("n_tokens")] == [
        len(p.encode()) for p in raw.column("prompt")
    ]
    assert bos is not None


def test_float16_overflow_is_refused(tmp_path):
    lm = tiny_lm("llama")
    with torch.no_grad():
        lm.model.model.embed_tokens.weight.mul_(1e6)
    from probing.errors import ProbingError

    with pytest.raises(ProbingError, match="storage_dtype float32"):
        run(tmp_path, lm, name="o.h5", storage_dtype="float16")
    assert not (tmp_path / "o.h5").exists()  # finished files appear only when complete
    with h5py.File(tmp_path / "o.h5.partial") as f:
        assert not f.attrs["complete"]
