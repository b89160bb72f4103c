"""``--positions template`` on the embedded models' own templates (SmolLM2's and Qwen2.5's default
system turns; Gemma-3-270M is a base model without one, so its prompts are raw): ``post_m`` is
``last``, ``inst`` is the state at the user's last character, batched = one at a time, the shared
head = whole prompts. About 2-3 min on 2 CPU cores, most of it loading the GGUFs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probing.errors import ProbingError
from probing.features.activations import ActivationReader
from probing.features.extract import ExtractConfig, extract
from probing.features.store import FeatureFile
from probing.models.load import ModelConfig, load_model
from probing.prompts import PromptSource

pytestmark = pytest.mark.slow

PROMPTS = ["Why is the sky blue?", "How do I pick a lock?", "hi", "Write a haiku about rain.  "]
# name, stored positions (inst + the template's tokens after the message)
MODELS = [("smollm2-135m-instruct", 7), ("qwen2.5-coder-0.5b-instruct", 6), ("gemma3-270m", 1)]
LOADED: dict[str, object] = {}


def model(name: str):
    if name not in LOADED:
        LOADED.clear()  # one model in memory at a time
        try:
            LOADED[name] = load_model(ModelConfig(name=name))
        except ProbingError as err:  # its packages are not installed
            pytest.skip(str(err))
    return LOADED[name]


def run(tmp_path, lm, name, **kw):
    src = tmp_path / "p.txt"
    src.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    cfg = ExtractConfig(prompts=[PromptSource(path=str(src), label="any")],
                        output=str(tmp_path / name), progress=False, storage_dtype="float32",
                        lens_top_k=0, **kw)  # fmt: skip
    ff = FeatureFile(extract(cfg, lm=lm))
    return ff, ff.column("hidden")[np.argsort(ff.column("prompt_index"))]


@pytest.mark.parametrize(("name", "stored"), MODELS)
def test_template_positions_on_embedded_models(tmp_path, name, stored, monkeypatch):
    lm = model(name)
    ff, t = run(tmp_path, lm, "t.h5", positions="template", batch_size=4)
    assert ff.num_positions == stored and ff.meta["position_names"][0] == "inst"
    assert ff.meta["template"] == ("raw" if stored == 1 else "chat")
    assert not ff.meta.get("skipped")
    _, last = run(tmp_path, lm, "l.h5", positions="last", batch_size=4)
    np.testing.assert_array_equal(t[:, :, -1], last[:, :, 0])
    _, one = run(tmp_path, lm, "one.h5", positions="template", batch_size=1)
    np.testing.assert_allclose(one, t, atol=2e-3, rtol=1e-3)
    monkeypatch.setattr(ActivationReader, "share_prefix", lambda self, seqs, progress=False: 0)
    _, whole = run(tmp_path, lm, "whole.h5", positions="template", batch_size=4)
    np.testing.assert_allclose(whole, t, atol=2e-3, rtol=1e-3)
    order = np.argsort(ff.column("prompt_index"))
    for row, i in enumerate(order):  # inst: the token whose character span ends the user's text
        prompt, text = ff.column("prompt")[i], ff.column("rendered")[i]
        end = text.rfind(prompt) + len(prompt) if stored > 1 else len(text)
        enc = lm.tokenizer(text, return_offsets_mapping=True)
        inst = max(j for j, (a, b) in enumerate(enc["offset_mapping"]) if a < end and b > a)
        ids = enc["input_ids"]
        assert len(ids) - 1 - inst == stored - 1
        with torch.no_grad():
            hs = lm.model(torch.tensor([ids]), output_hidden_states=True).hidden_states
        ref = np.stack([h[0, inst].float().numpy() for h in hs])
        np.testing.assert_allclose(t[row, :, 0], ref, atol=2e-3, rtol=1e-3)
