"""GGUF models parsed once, converted into the model cache, and loaded from there afterwards."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from probing.cli import main
from probing.features import FeatureFile
from probing.features.extract import ExtractConfig, extract
from probing.models import ModelConfig, cache, load_model, load_tokenizer
from probing.models.assemble import sha256_file
from probing.prompts import PromptSource

gguf = pytest.importorskip("gguf")

CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PROMPTS = ["hello world", "Hello, hell!", "ünïcödé 123"]


def write_tiny_gguf(path: Path, seed: int = 0, context: int = 64) -> Path:
    """A 2-block llama GGUF (hidden 32) with a byte-level BPE tokenizer and a chat template.

    Most matrices are Q8_0, so loading it dequantizes, as with the real models.
    """
    from tokenizers import pre_tokenizers

    rng = np.random.default_rng(seed)
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens += sorted(pre_tokenizers.ByteLevel.alphabet()) + ["he", "ll", "hell"]
    n_vocab, dim, ffn, blocks, heads, kv_heads = len(tokens), 32, 64, 2, 4, 2
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(context)
    w.add_embedding_length(dim)
    w.add_block_count(blocks)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(dim // heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.NORMAL] * (n_vocab - 3))
    w.add_token_merges(["h e", "l l", "he ll"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    w.add_chat_template(CHAT)

    def tensor(name: str, shape: tuple[int, ...], quantized: bool = True) -> None:
        a = (rng.standard_normal(shape) * 0.2).astype(np.float32)
        if quantized:
            q8 = gguf.GGMLQuantizationType.Q8_0
            w.add_tensor(name, gguf.quants.quantize(a, q8), raw_dtype=q8)
        else:
            w.add_tensor(name, a)

    tensor("token_embd.weight", (n_vocab, dim))
    tensor("output_norm.weight", (dim,), quantized=False)
    kv = dim // heads * kv_heads
    for i in range(blocks):
        tensor(f"blk.{i}.attn_norm.weight", (dim,), quantized=False)
        tensor(f"blk.{i}.ffn_norm.weight", (dim,), quantized=False)
        tensor(f"blk.{i}.attn_q.weight", (dim, dim))
        tensor(f"blk.{i}.attn_k.weight", (kv, dim))
        tensor(f"blk.{i}.attn_v.weight", (kv, dim))
        tensor(f"blk.{i}.attn_output.weight", (dim, dim))
        tensor(f"blk.{i}.ffn_gate.weight", (ffn, dim))
        tensor(f"blk.{i}.ffn_up.weight", (ffn, dim))
        tensor(f"blk.{i}.ffn_down.weight", (dim, ffn))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def model_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PROBING_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def _direct(path: Path, dtype: torch.dtype):
    """The GGUF loaded the way load_model did before the cache (transformers, ``gguf_file=``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    return tok, model.eval()


def _logits(model, tok, text: str) -> torch.Tensor:
    with torch.no_grad():
        return model(**tok(text, return_tensors="pt"), use_cache=False).logits


def _no_conversion(monkeypatch) -> None:
    def refuse(*_a, **_k):
        raise AssertionError("converted again instead of loading from the cache")

    monkeypatch.setattr(cache, "convert", refuse)


def test_first_load_parses_the_gguf_once(tiny_gguf, model_cache, monkeypatch):
    made = []
    init = gguf.GGUFReader.__init__

    def counting(self, path, *args, **kwargs):
        made.append(os.path.realpath(path))
        init(self, path, *args, **kwargs)

    monkeypatch.setattr(gguf.GGUFReader, "__init__", counting)
    lm = load_model(ModelConfig(name=str(tiny_gguf)))
    assert made == [os.path.realpath(tiny_gguf)]  # tokenizer, config and weights share one parse
    assert lm.parts.num_decoder_layers == 2
    # parse_once leaves nothing patched behind
    assert gguf.GGUFReader.__name__ == "GGUFReader"
    from transformers import modeling_gguf_pytorch_utils as mgpu

    assert mgpu.load_gguf_checkpoint.__module__ == "transformers.modeling_gguf_pytorch_utils"
    made.clear()
    load_model(ModelConfig(name=str(tiny_gguf)))
    assert made == []  # the second load reads the cache only


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cached_model_equals_the_direct_gguf_load(tiny_gguf, model_cache, monkeypatch, dtype):
    cfg = ModelConfig(name=str(tiny_gguf), dtype=dtype)
    first = load_model(cfg)  # converts
    entry = cache.find(sha256_file(tiny_gguf))
    assert entry is not None and entry.parent == model_cache / "converted"
    _no_conversion(monkeypatch)
    second = load_model(cfg)  # from the cache
    tok, direct = _direct(tiny_gguf, getattr(torch, dtype))
    assert first.meta == second.meta
    assert second.meta["model_source"] == "gguf" and second.meta["dtype"] == dtype
    assert second.meta["gguf_sha256"] == sha256_file(tiny_gguf)
    assert next(second.model.parameters()).dtype == getattr(torch, dtype)
    for text in PROMPTS:
        ref = _logits(direct, tok, text)
        assert torch.equal(_logits(first.model, first.tokenizer, text), ref)
        assert torch.equal(_logits(second.model, second.tokenizer, text), ref)
    sd, ref_sd = second.model.state_dict(), direct.state_dict()
    assert sd.keys() == ref_sd.keys() and all(torch.equal(sd[k], ref_sd[k]) for k in sd)


def test_cached_tokenizer_equals_the_direct_one(tiny_gguf, model_cache, monkeypatch):
    load_tokenizer(ModelConfig(name=str(tiny_gguf)))
    _no_conversion(monkeypatch)
    cached = load_tokenizer(ModelConfig(name=str(tiny_gguf)))
    direct, _ = _direct(tiny_gguf, torch.float32)
    chat = [{"role": "user", "content": "hello"}]
    for text in PROMPTS:
        assert cached(text)["input_ids"] == direct(text)["input_ids"]
    assert cached.apply_chat_template(
        chat, tokenize=False, add_generation_prompt=True
    ) == direct.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    for attr in (
        "bos_token",
        "eos_token",
        "pad_token",
        "unk_token",
        "padding_side",
        "chat_template",
    ):
        assert getattr(cached, attr) == getattr(direct, attr), attr
    assert cached.get_vocab() == direct.get_vocab()


def test_extract_resolves_the_model_once(tiny_gguf, model_cache, tmp_path, monkeypatch):
    """One extraction hashes its GGUF once (tokenizer, identity, context length and model share it)."""
    import probing.models.load as load_mod

    calls = []
    monkeypatch.setattr(load_mod, "sha256_file", lambda p: calls.append(p) or sha256_file(p))
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    cfg = ExtractConfig(
        model=ModelConfig(name=str(tiny_gguf)),
        prompts=[PromptSource(path=str(prompts), label="x")],
        output=str(tmp_path / "f.h5"),
        progress=False,
    )
    ff = FeatureFile(extract(cfg))
    assert len(calls) == 1 and ff.meta["gguf_sha256"] == sha256_file(tiny_gguf)
    source = load_mod.resolve_model(cfg.model)
    assert source.kind == "gguf" and source.sha256 == ff.meta["gguf_sha256"]
    assert load_mod.resolve_model(source) is source and len(calls) == 2


def test_refusal_and_graft_resolve_the_model_once(tiny_gguf, model_cache, tmp_path, monkeypatch):
    """`probing refusal` and `probing graft` each hash their GGUF once, as extraction does."""
    import probing.models.load as load_mod

    normal, malicious = tmp_path / "normal.txt", tmp_path / "malicious.txt"
    normal.write_text("hello world\nhello there\n", encoding="utf-8")
    malicious.write_text("hell hell\nell he\n", encoding="utf-8")
    sources = f'[{{path: "{normal}", label: normal}}, {{path: "{malicious}", label: malicious}}]'
    feats = tmp_path / "f.h5"
    model = ["--model.name", str(tiny_gguf)]
    assert main(["extract", *model, "--prompts", sources, "--output", str(feats)]) == 0
    calls: list = []
    monkeypatch.setattr(load_mod, "sha256_file", lambda p: calls.append(p) or sha256_file(p))
    args = ["--prompts", sources, "--output", str(tmp_path / "refusal"), "--max_new_tokens", "2"]
    assert main(["refusal", *model, *args, "--progress", "false"]) == 0
    assert len(calls) == 1
    calls.clear()
    graft = ["--features", str(feats), "--layers", "[1]", "--max_new_tokens", "2"]
    assert main(["graft", *graft, "--output", str(tmp_path / "graft")]) == 0  # the file's model
    assert len(calls) == 1 and (tmp_path / "graft" / "graft_summary.csv").is_file()


def test_demo_alignment_side_resolves_its_model_once(model_cache, tmp_path, monkeypatch):
    """The demo's alignment stages (extract, refusal, lens, grafting) share one resolved model."""
    import probing.models.load as load_mod
    from probing.demo import alignment_side
    from probing.demo_config import DemoConfig
    from probing.demo_run import Demo

    path = write_tiny_gguf(tmp_path / "tiny.gguf", context=1024)  # the built-in prompts fit
    calls: list = []
    monkeypatch.setattr(load_mod, "sha256_file", lambda p: calls.append(p) or sha256_file(p))
    cfg = DemoConfig(output=str(tmp_path / "out"), alignment_model=str(path), threads=1)
    cfg.alignment_per_class, cfg.graft_prompts, cfg.graft_stride, cfg.max_new_tokens = 4, 2, 2, 2
    demo = Demo(cfg)
    alignment_side(demo)
    # a random model's replies are all "unclear": no refusal label set to place jailbreaks on
    assert set(demo.notes) <= {"jailbreak located"} and "grafting sweep" in demo.timings
    assert "jailbreak located" in demo.timings and "(not run: skipped:" in demo.sections[-1]
    assert len(calls) == 1


def test_feature_files_are_the_same_from_gguf_and_cache(
    tiny_gguf, model_cache, tmp_path, monkeypatch
):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")

    def run(name: str) -> FeatureFile:
        cfg = ExtractConfig(
            model=ModelConfig(name=str(tiny_gguf)),
            prompts=[PromptSource(path=str(prompts), label="x")],
            output=str(tmp_path / name),
            progress=False,
        )
        return FeatureFile(extract(cfg))

    cold = run("cold.h5")
    assert cache.find(sha256_file(tiny_gguf)) is not None
    _no_conversion(monkeypatch)
    warm = run("warm.h5")
    for key in ("model", "model_source", "gguf_sha256", "model_revision", "dtype"):
        assert warm.meta[key] == cold.meta[key], key
    assert warm.meta["model_source"] == "gguf" and len(warm.meta["gguf_sha256"]) == 64
    assert warm.meta["model"] == str(tiny_gguf)
    assert warm.num_rows == cold.num_rows == len(PROMPTS)
    for name in ("hidden", "lens_ids", "lens_logits", "n_tokens"):  # hidden: every layer
        assert np.array_equal(warm.column(name), cold.column(name)), name
    cold.close()
    warm.close()


def test_broken_entry_is_rebuilt_with_a_warning(tiny_gguf, model_cache, caplog):
    cfg = ModelConfig(name=str(tiny_gguf))
    ref = load_model(cfg)
    expected = _logits(ref.model, ref.tokenizer, "hello")
    del ref  # its weights are memory-mapped from the file corrupted below
    entry = cache.find(sha256_file(tiny_gguf))
    assert entry is not None
    (entry / "model.safetensors").write_bytes(b"truncated")  # a corrupted entry
    assert cache.find(sha256_file(tiny_gguf), warn=False) is None
    with caplog.at_level(logging.WARNING, logger="probing"):
        again = load_model(cfg)
    assert (
        "ignoring the broken model cache entry" in caplog.text
        and "model.safetensors" in caplog.text
    )
    assert cache.find(sha256_file(tiny_gguf)) == entry
    assert torch.equal(_logits(again.model, again.tokenizer, "hello"), expected)
    del again
    # an interrupted conversion: a folder without its marker (written last) is never used
    (entry / cache.MARKER).unlink()
    assert cache.find(sha256_file(tiny_gguf), warn=False) is None
    load_model(cfg)
    assert cache.find(sha256_file(tiny_gguf)) == entry
    # a marker from another transformers version does not count
    record = json.loads((entry / cache.MARKER).read_text())
    (entry / cache.MARKER).write_text(json.dumps({**record, "transformers": "0.0"}))
    assert cache.find(sha256_file(tiny_gguf), warn=False) is None


def test_key_names_what_changes_the_conversion(tiny_gguf, model_cache, monkeypatch):
    sha = sha256_file(tiny_gguf)
    name = cache.entry_path(sha).name
    import transformers

    assert name.startswith(sha) and f"transformers{transformers.__version__}" in name
    assert "float32" in name and f"-v{cache.FORMAT}" in name
    monkeypatch.setattr(cache, "_version", lambda dist: "9.9" if dist == "transformers" else "1")
    assert cache.entry_path(sha) != model_cache / "converted" / name


def test_two_processes_converting_at_once(tiny_gguf, model_cache):
    """Both load; the lock makes one convert and the other read its entry; nothing is left over."""
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO)\n"
        "from probing.models import ModelConfig, load_model\n"
        "lm = load_model(ModelConfig(name=sys.argv[1]))\n"
        "print(lm.meta['gguf_sha256'])\n"
    )
    env = {**os.environ, "PROBING_CACHE": str(model_cache)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tiny_gguf)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert {out.strip() for out, _ in outs} == {sha256_file(tiny_gguf)}
    assert sum(err.count("once into the model cache") for _, err in outs) == 1
    entries = cache.entries()
    assert len(entries) == 1 and entries[0].valid
    leftovers = [p.name for p in (model_cache / "converted").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_unwritable_cache_loads_the_gguf_directly(tiny_gguf, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("PROBING_CACHE", str(blocker / "cache"))
    with caplog.at_level(logging.WARNING, logger="probing"):
        lm = load_model(ModelConfig(name=str(tiny_gguf)))
    assert "cannot use the model cache" in caplog.text
    tok, direct = _direct(tiny_gguf, torch.float32)
    assert torch.equal(_logits(lm.model, lm.tokenizer, "hello"), _logits(direct, tok, "hello"))


def test_cache_command_lists_and_clears(tiny_gguf, model_cache, capsys):
    assert main(["cache"]) == 0
    assert "no converted models" in capsys.readouterr().out
    load_tokenizer(ModelConfig(name=str(tiny_gguf)))
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "tiny.gguf" in out and " ok" in out and "1 entries" in out
    assert main(["cache", "--clear", "true"]) == 0
    assert "removed" in capsys.readouterr().out
    assert not (model_cache / "converted").exists() and cache.entries() == []
    assert cache.clear() == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "gemma3-270m"]
)
def test_builtin_from_cache_equals_the_gguf(name, tmp_path, monkeypatch):
    """A built-in model from the cache: bit-identical logits, same tokenization and metadata."""
    from probing.errors import ProbingError
    from probing.models.builtin import BUILTIN_MODELS

    try:
        path = BUILTIN_MODELS[name].locate()  # assembled ones stay in the user's cache
    except ProbingError as err:
        pytest.skip(str(err))
    monkeypatch.setattr(cache, "converted_dir", lambda: tmp_path / "converted")
    cfg = ModelConfig(name=name)
    first = load_model(cfg)
    _no_conversion(monkeypatch)
    second = load_model(cfg)
    assert first.meta == second.meta and second.meta["model_source"] == "builtin"
    assert second.meta["gguf_sha256"] == sha256_file(path)
    del first
    tok, direct = _direct(path, torch.float32)
    text = "How do I bake bread?"
    if tok.chat_template:
        chat = [{"role": "user", "content": text}]
        text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert (
            second.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            == text
        )
    assert second.tokenizer(text)["input_ids"] == tok(text)["input_ids"]
    assert torch.equal(_logits(second.model, second.tokenizer, text), _logits(direct, tok, text))
