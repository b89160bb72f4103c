"""The prompt pass's last-token logits: ``logits_to_keep=1`` (a strided slice) vs an index tensor.

transformers slices the last hidden states with ``logits_to_keep=1`` (a strided ``[B, 1, D]`` view)
before the unembedding; the CPU's bfloat16 matmul is far slower on that view than on the contiguous
copy the index form (``probing.models.batching.last_logits``) gathers. Times, side by side in one
process (interleaved, best of ``--repeats``), on a built-in model in ``--dtype``:

  * the unembedding alone on ``[batch, 1, D]``: strided view vs contiguous;
  * a whole prompt pass (``model(...)``) of ``--batch`` chat-formatted built-in prompts with each
    form of ``logits_to_keep``, and the largest logit difference between them;

printed beside the CPU capability (the result depends on the CPU's bfloat16 support). Usage:

    python bench/last_logits.py [--model qwen2.5-coder-0.5b-instruct] [--dtype bfloat16]
        [--batch 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    from probing.models import ModelConfig, load_model
    from probing.models.batching import last_logits, left_pad, position_ids_from_mask
    from probing.models.lens_matmul import cpu_capability
    from probing.prompts import PromptSource, load_prompts
    from probing.prompts.render import render

    lm = load_model(ModelConfig(name=args.model, dtype=args.dtype))
    prompts, _, _, _ = load_prompts([PromptSource(path="normal"), PromptSource(path="malicious")])
    prompts = prompts[: args.batch]
    seqs = render(lm.tokenizer, list(prompts), "chat").ids
    ids, mask = left_pad(seqs, lm.tokenizer.pad_token_id or 0)
    positions = position_ids_from_mask(mask)
    head = lm.parts.unembed
    dtype = head.weight.dtype
    hidden = torch.randn(ids.shape[0], ids.shape[1], head.weight.shape[1], dtype=dtype)
    strided, contiguous = hidden[:, -1:, :], hidden[:, -1:, :].contiguous()

    def forward(keep):
        with torch.inference_mode():
            return lm.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep
            ).logits

    cases = {
        "unembedding, strided [B,1,D] view": lambda: head(strided),
        "unembedding, contiguous copy": lambda: head(contiguous),
        "prompt pass, logits_to_keep=1": lambda: forward(1),
        "prompt pass, logits_to_keep=last_logits()": lambda: forward(last_logits()),
    }
    for fn in cases.values():  # warm-up: oneDNN builds its kernels on the first call of a shape
        fn()
    times = {name: [] for name in cases}
    for _ in range(args.repeats):  # interleaved
        for name, fn in cases.items():
            times[name].append(best(fn, 1))
    cpu = cpu_capability()
    print(f"{args.model} {args.dtype}, batch {ids.shape[0]} x {ids.shape[1]} tokens, "
          f"vocab {head.weight.shape[0]}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads  [{cpu}]")  # fmt: skip
    for name, ts in times.items():
        print(f"  {name:45s} best {min(ts):8.3f} s")
    a, b = forward(1), forward(last_logits())
    print(
        f"  prompt pass: int form / index form = "
        f"{min(times['prompt pass, logits_to_keep=1']) / min(times['prompt pass, logits_to_keep=last_logits()']):.1f}x; "
        f"max |logit difference| {float((a.float() - b.float()).abs().max()):.2e}"
    )


if __name__ == "__main__":
    main()
