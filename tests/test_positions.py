"""``--positions template``: the user's instruction's last token (``inst``) and the chat template's
tokens after it (``post_1 … post_m``), found from character offsets; names in ``position_names``
and every reader picking a position by name."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from tiny import SUPPORTED, extract_texts, tiny_lm

from probing.errors import ProbingError
from probing.features import FeatureFile, plan
from probing.features.activations import ActivationReader
from probing.features.positions import names_for, position_names, resolve_position
from probing.prompts.instruction import instruction_tokens, template_tail

PROMPTS = [
    "hi",
    "Tell me a story about a lighthouse keeper and a seal.",
    "Why is the sky blue?",
    "x",
    "Summarise the plot of a long novel in three sentences, please.",
    "Écris un poème sur la pluie 🌧",
]
TAIL = "<|im_end|>\n<|im_start|>assistant\n"  # the tiny template's text after the user's message
M = 13  # its tokens (byte-level, no merges: <|im_end|>, \n, <|im_start|>, a-s-s-i-s-t-a-n-t, \n)


def run(tmp_path, lm, name, **kw):
    return extract_texts(tmp_path, lm, PROMPTS, name, **kw)


def in_prompt_order(ff: FeatureFile, dataset: str = "hidden") -> np.ndarray:
    return ff.column(dataset)[np.argsort(ff.column("prompt_index"))]


def inst_reference(lm, ff: FeatureFile) -> np.ndarray:
    """HF hidden states ``[N, L, D]`` at the token whose character span ends the user's text,
    found independently: the prompt located in the rendered text, offsets of the stored ids."""
    order = np.argsort(ff.column("prompt_index"))
    rendered = [ff.column("rendered")[i] for i in order]
    prompts = [ff.column("prompt")[i] for i in order]
    out = []
    for prompt, text in zip(prompts, rendered, strict=True):
        end = text.rfind(prompt) + len(prompt)
        assert text[end:] == TAIL
        enc = lm.tokenizer(text, return_offsets_mapping=True)
        spans = enc["offset_mapping"]
        inst = max(j for j, (a, b) in enumerate(spans) if a <= end - 1 < b)
        with torch.no_grad():
            hs = lm.model(torch.tensor([enc["input_ids"]]), output_hidden_states=True).hidden_states
        out.append(np.stack([h[0, inst].numpy() for h in hs]))
    return np.stack(out)


@pytest.mark.parametrize("arch", SUPPORTED)
def test_template_positions(tmp_path, arch, monkeypatch):
    """post_m is `last` exactly, inst is the state at the user's last character, batched = one at a
    time, and the shared head (the template's start run once) = whole prompts."""
    lm = tiny_lm(arch)
    ff = run(tmp_path, lm, "t.h5", positions="template", batch_size=6, system_prompt="Be brief.")
    assert ff.meta["position_names"] == ["inst"] + [f"post_{j}" for j in range(1, M + 1)]
    assert ff.num_positions == M + 1 and ff.meta["positions"] == "template"
    last = run(tmp_path, lm, "l.h5", positions="last", batch_size=6, system_prompt="Be brief.")
    assert last.meta["position_names"] == ["last"]
    t = in_prompt_order(ff)
    np.testing.assert_array_equal(t[:, :, -1], in_prompt_order(last)[:, :, 0])
    np.testing.assert_allclose(t[:, :, 0], inst_reference(lm, ff), atol=1e-4, rtol=1e-4)
    one = run(tmp_path, lm, "one.h5", positions="template", batch_size=1, system_prompt="Be brief.")
    np.testing.assert_allclose(in_prompt_order(one), t, atol=1e-4, rtol=1e-4)
    shared = []
    share = ActivationReader.share_prefix
    monkeypatch.setattr(
        ActivationReader, "share_prefix", lambda s, q, *a: shared.append(share(s, q)) or shared[-1]
    )
    run(tmp_path, lm, "shared.h5", positions="template", batch_size=6, system_prompt="Be brief.")
    assert shared and shared[0] > M, "the system turn is shared by every prompt"
    monkeypatch.setattr(ActivationReader, "share_prefix", lambda s, q, *a: 0)
    whole = run(
        tmp_path, lm, "whole.h5", positions="template", batch_size=6, system_prompt="Be brief."
    )
    np.testing.assert_allclose(in_prompt_order(whole), t, atol=1e-5, rtol=1e-5)


def test_truncated_on_the_left_keeps_inst(tmp_path):
    """A prompt cut from the left still has inst at its user's last character."""
    lm = tiny_lm("llama")
    ff = run(tmp_path, lm, "t.h5", positions="template", max_tokens=40, too_long="truncate")
    truncated = in_prompt_order(ff, "truncated")
    assert truncated.sum() >= 2 and not truncated.all()
    order = np.argsort(ff.column("prompt_index"))
    hidden = in_prompt_order(ff)
    for row, i in enumerate(order):
        text = ff.column("rendered")[i]  # a truncated row: the decoded tokens kept
        ids = lm.tokenizer(text)["input_ids"]
        assert len(ids) == ff.column("n_tokens")[i] <= 40
        with torch.no_grad():
            hs = lm.model(torch.tensor([ids]), output_hidden_states=True).hidden_states
        inst = len(ids) - 1 - M
        assert lm.tokenizer.decode(ids[inst + 1 :]) == TAIL
        assert lm.tokenizer.decode(ids[: inst + 1]).endswith(ff.column("prompt")[i][-5:])
        ref = np.stack([h[0, inst].numpy() for h in hs])
        np.testing.assert_allclose(hidden[row, :, 0], ref, atol=1e-4, rtol=1e-4)


def test_raw_prompts_store_inst_only(tmp_path):
    """Without a template the instruction ends at the last token: P = 1, named inst."""
    lm = tiny_lm("llama")
    ff = run(tmp_path, lm, "raw.h5", positions="template", template="raw")
    last = run(tmp_path, lm, "last.h5", positions="last", template="raw")
    assert ff.meta["position_names"] == ["inst"] and ff.num_positions == 1
    np.testing.assert_array_equal(in_prompt_order(ff), in_prompt_order(last))
    assert resolve_position(ff.meta, "last", "--data.position") == 0


def test_tail_and_system_turn():
    lm = tiny_lm("llama")
    assert template_tail(lm.tokenizer, "chat") == TAIL
    assert template_tail(lm.tokenizer, "chat", "Be brief.") == TAIL
    assert template_tail(lm.tokenizer, "raw") == ""


def test_a_message_that_merges_with_the_template_is_skipped(tmp_path, monkeypatch):
    """A row whose last token also holds template text has fewer post tokens: skipped, counted."""
    lm = tiny_lm("llama")

    def merged(tokenizer, rendered, system_prompt=None):  # as if "x<|im_end|>" were one token
        out = instruction_tokens(tokenizer, rendered, system_prompt)
        return [
            len(ids) - 1 if text.endswith("\nx" + TAIL) else j
            for ids, text, j in zip(rendered.ids, rendered.text, out, strict=True)
        ]

    monkeypatch.setattr(plan, "instruction_tokens", merged)
    ff = run(tmp_path, lm, "t.h5", positions="template")
    assert ff.meta["skipped"] == {"template_boundary": 1}
    assert ff.num_positions == M + 1 and ff.num_rows == len(PROMPTS) - 1
    assert "x" not in ff.column("prompt")


def test_names_of_every_setting_and_old_files():
    assert names_for("last", 1) == ["last"] and names_for("mean", 1) == ["mean"]
    assert names_for("last_k", 3) == ["last-2", "last-1", "last"]
    assert names_for("template", 3) == ["inst", "post_1", "post_2"]
    old = {"positions": "last_k", "num_positions": 3}  # a file from before position_names
    assert position_names(old) == ["last-2", "last-1", "last"]
    assert resolve_position(old, "last", "--data.position") == 2
    assert resolve_position(old, -1, "--data.position") == 2
    assert resolve_position(old, "0", "--data.position") == 0
    assert resolve_position({"positions": "mean", "num_positions": 1}, "mean", "--x") == 0
    with pytest.raises(
        ProbingError, match=r"--x='mean' is not a position of f.h5: it stores \['last'\]"
    ):
        resolve_position({"positions": "last", "num_positions": 1}, "mean", "--x", "f.h5")
    new = {
        "positions": "template",
        "num_positions": 3,
        "position_names": ["inst", "post_1", "post_2"],
    }
    assert [resolve_position(new, n, "--x") for n in ("inst", "post_1", "last", -1)] == [0, 1, 2, 2]
    with pytest.raises(ProbingError, match=r"--x=3 is out of range: f.h5 stores 3 position\(s\)"):
        resolve_position(new, 3, "--x", "f.h5")


def test_damaged_position_names_are_refused(tmp_path):
    lm = tiny_lm("llama")
    ff = run(tmp_path, lm, "t.h5", positions="last")
    ff.close()
    with h5py.File(ff.path, "r+") as f:
        f.attrs["position_names"] = '["a", "b"]'
    with pytest.raises(ProbingError, match="position_names .* is not a list of 1 distinct names"):
        FeatureFile(ff.path)
