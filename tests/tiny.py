"""Tiny random causal LMs and a byte-level tokenizer with a chat template, built in code."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    FalconConfig,
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    MixtralConfig,
    Olmo2Config,
    OPTConfig,
    Phi3Config,
    PhiConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from probing.models.batching import left_pad, position_ids_from_mask
from probing.models.load import LoadedModel, from_pretrained_objects

MAX_PARAMS = 500_000
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<pad>", "<bos>", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer(bos: bool = False) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer without merges (vocab 256 + 4 specials); ``bos`` adds one per text."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    if bos:
        from tokenizers.processors import TemplateProcessing

        fast._tokenizer.post_processor = TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
        )
    return fast


VOCAB = 260
CONFIGS = {
    "llama": lambda: LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    ),
    "qwen2": lambda: Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    ),
    "gpt2": lambda: GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=3,
        n_head=4,
        n_positions=256,
        bos_token_id=1,
        eos_token_id=3,
    ),
    "gemma2": lambda: Gemma2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
        sliding_window=64,
        final_logit_softcapping=30.0,
    ),
    "falcon": lambda: FalconConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        new_decoder_architecture=False,
        multi_query=True,
        alibi=False,
        max_position_embeddings=256,
    ),
    "mistral": lambda: MistralConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        sliding_window=64,
    ),
    "mixtral": lambda: MixtralConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=256,
    ),
    "qwen3": lambda: Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
    ),
    "gemma": lambda: GemmaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
    ),
    "gemma3_text": lambda: Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
    ),
    "phi": lambda: PhiConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        partial_rotary_factor=0.5,
        max_position_embeddings=256,
    ),
    "phi3": lambda: Phi3Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        original_max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=3,
    ),
    "olmo2": lambda: Olmo2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=3,
    ),
    "opt": lambda: OPTConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        ffn_dim=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        word_embed_proj_dim=32,
        max_position_embeddings=256,
    ),
}
# every architecture probing.models.lookup supports (opt above is the unsupported one)
SUPPORTED = [arch for arch in CONFIGS if arch != "opt"]


def tiny_model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = CONFIGS[arch]()
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    n = sum(p.numel() for p in model.parameters())
    assert n < MAX_PARAMS, f"tiny {arch} has {n} parameters"
    model.eval()
    return model


def tiny_lm(arch: str, seed: int = 0, bos: bool = False) -> LoadedModel:
    return from_pretrained_objects(tiny_model(arch, seed), tiny_tokenizer(bos), name=f"tiny-{arch}")


def save_tiny(folder: Path, arch: str, seed: int = 0) -> Path:
    """A loadable model folder (for CLI tests that pass --model.name PATH)."""
    model = tiny_model(arch, seed)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


TEXTS = ["Tell me about the moon.", "hi", "Write a poem about rain and umbrellas."]


def padded_batch(lm: LoadedModel, texts: list[str] = TEXTS) -> dict[str, torch.Tensor]:
    """Model inputs for ``texts``, left-padded, with position ids from the attention mask."""
    ids = [lm.tokenizer(t).input_ids for t in texts]
    x, mask = left_pad(ids, lm.tokenizer.pad_token_id)
    return {"input_ids": x, "attention_mask": mask, "position_ids": position_ids_from_mask(mask)}


def forward_states(
    lm: LoadedModel, inputs: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Logits and ``output_hidden_states`` of one forward pass (no cache, no gradients)."""
    with torch.no_grad():
        out = lm.model(**inputs, output_hidden_states=True, use_cache=False)
    return out.logits, out.hidden_states


def extract_texts(tmp_path: Path, lm: LoadedModel, prompts: list[str], name: str = "f.h5", **kw):
    """Extract ``prompts`` (one source labelled ``any``, float32 unless given) with ``lm`` into
    ``tmp_path / name``; the opened feature file."""
    from probing.features import FeatureFile
    from probing.features.extract import ExtractConfig, extract
    from probing.prompts import PromptSource

    src = tmp_path / "p.txt"
    src.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    kw.setdefault("storage_dtype", "float32")
    cfg = ExtractConfig(
        prompts=[PromptSource(path=str(src), label="any")],
        output=str(tmp_path / name),
        progress=False,
        **kw,
    )
    return FeatureFile(extract(cfg, lm=lm))
