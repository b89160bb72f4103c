"""GPU check at 7B shape, nothing downloaded: a randomly initialised Llama-7B-shaped model.

Measures bf16 extraction throughput (all 33 layers, lens top-5, no writing) against a bare decoder
forward over the same left-padded batches. Run through bench/gpu.sh on a machine with a CUDA GPU.
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from probing.features.activations import ActivationReader
from probing.models.batching import left_pad, position_ids_from_mask
from probing.models.load import from_pretrained_objects


def build(layers: int) -> torch.nn.Module:
    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
    )
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return model.eval().requires_grad_(False)


def batches(n: int, batch_size: int, seed: int = 0) -> list[list[list[int]]]:
    g = torch.Generator().manual_seed(seed)
    lengths = sorted(torch.randint(48, 320, (n,), generator=g).tolist(), reverse=True)
    seqs = [torch.randint(3, 32000, (k,), generator=g).tolist() for k in lengths]
    return [seqs[i : i + batch_size] for i in range(0, n, batch_size)]


def timed(fn, data) -> float:
    fn(data[0])  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    for b in data:
        fn(b)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    model = build(args.layers)
    lm = from_pretrained_objects(
        model, SimpleNamespace(pad_token_id=0, eos_token_id=0), "random-llama-7b"
    )
    reader = ActivationReader(lm, "last", top_k=5)
    data = batches(args.prompts, args.batch_size)
    tokens = sum(len(s) for b in data for s in b)

    @torch.inference_mode()
    def bare(batch):
        ids, mask = left_pad(batch, 0)
        lm.parts.backbone(
            input_ids=ids.cuda(),
            attention_mask=mask.cuda(),
            position_ids=position_ids_from_mask(mask).cuda(),
            use_cache=False,
        )

    t_bare = timed(bare, data)
    t_extract = timed(reader, data)
    result = {
        "device": torch.cuda.get_device_name(),
        "layers": args.layers + 1,
        "prompts": args.prompts,
        "tokens": tokens,
        "bare_tokens_per_s": tokens / t_bare,
        "extract_tokens_per_s": tokens / t_extract,
        "extract_vs_bare": t_bare / t_extract,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
