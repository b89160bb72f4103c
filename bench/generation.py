"""Generation benchmark: refusal generation and the grafting sweep, before vs after, side by side.

One process, one model load, the built-in prompts with the chat template; every variant counted
(forward passes and tokens through the decoder, padding included) and timed, variants interleaved
per repeat:

  refusal before  ``generate`` as it was: length-sorted batches of 8, each prefilled and decoded alone
  refusal after   the same batches prefilled (the chat template's shared head once), their caches
                  joined and decoded together, finished rows dropped
  graft before    the sweep as it was: per condition and batch of 8, a full extraction pass under
                  the graft (states, logits), then ``generate`` under the graft (prefill again)
  graft after     ``GraftSweep.conditions``: each batch's prefix once, its cache repeated for all
                  conditions, their last tokens in one pass, decoded together

and checks that both give the same continuations (and states/logits within 1e-4). Usage:

    python bench/generation.py [--model qwen2.5-coder-0.5b-instruct] [--per_class 8]
        [--layers 1 9 17] [--max_new_tokens 16] [--repeats 1] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from contextlib import nullcontext

import torch

from probing.features.activations import ActivationReader
from probing.generation.generate import generate
from probing.generation.judge import load_judge
from probing.grafting.hooks import graft
from probing.grafting.sweep import GraftSweep
from probing.models import ModelConfig, load_model
from probing.prompts import PromptSource, load_prompts, render


class Counter:
    """Forward passes and tokens (padding included) through the decoder backbone."""

    def __init__(self, lm) -> None:
        self.passes = self.tokens = 0
        lm.parts.backbone.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.passes += 1
        self.tokens += int(ids.numel())

    def reset(self) -> tuple[int, int]:
        out = (self.passes, self.tokens)
        self.passes = self.tokens = 0
        return out


def sweep_before(lm, seqs, grafts, max_new_tokens, batch_size=8):
    """The sweep before the shared prefix: every condition and batch runs the whole prompt twice."""
    reader = ActivationReader(lm, "last")
    out = []
    for layer, donor in grafts:
        hidden, logits, tokens = [], [], []
        for lo in range(0, len(seqs), batch_size):
            batch = seqs[lo : lo + batch_size]
            with nullcontext() if layer is None else graft(lm.parts, layer, donor):
                states = reader(batch, logits=True)
            with nullcontext() if layer is None else graft(lm.parts, layer, donor):
                gen = generate(lm, batch, max_new_tokens, batch_size=len(batch))
            hidden.append(states.hidden[:, :, 0])
            logits.append(states.logits)
            tokens += gen.text
        out.append((torch.cat(hidden), torch.cat(logits), tokens))
    return out


def sweep_after(lm, seqs, grafts, max_new_tokens):
    sweep = GraftSweep(lm, load_judge(), lambda t: "neutral", max_new_tokens, rows_per_pass=256)
    return [(o.hidden, o.logits, o.texts) for o in sweep.conditions(seqs, grafts)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--per_class", type=int, default=8)
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 9, 17])
    ap.add_argument("--max_new_tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load_model(ModelConfig(name=args.model))
    count = Counter(lm)
    names = ("normal", "malicious", "jailbreak")
    prompts, labels, _, _ = load_prompts(
        [PromptSource(path=n, limit=args.per_class) for n in names]
    )
    seqs = render(lm.tokenizer, prompts, "chat").ids
    targets = [s for s, y in zip(seqs, labels) if y != 0]  # malicious and jailbreak
    with torch.inference_mode():
        normal = ActivationReader(lm, "last")([s for s, y in zip(seqs, labels) if y == 0])
    donor = normal.hidden[:, :, 0].mean(0)  # [L, D]: the normal-class mean, as the sweep grafts
    grafts = [(None, None)] + [(layer, donor[layer]) for layer in args.layers]
    n = args.max_new_tokens
    variants = {
        "refusal before": lambda: generate(lm, seqs, n, batch_size=8).token_ids,
        "refusal after": lambda: (
            generate(lm, seqs, n, batch_size=8, decode_rows=256, share_head=True).token_ids
        ),
        "graft before": lambda: sweep_before(lm, targets, grafts, n),
        "graft after": lambda: sweep_after(lm, targets, grafts, n),
    }
    walls: dict[str, list[float]] = {k: [] for k in variants}
    counts: dict[str, tuple[int, int]] = {}
    results: dict[str, object] = {}
    load_before = os.getloadavg()[0]
    for r in range(args.repeats):
        for name, fn in variants.items():
            count.reset()
            start = time.perf_counter()
            results[name] = fn()
            walls[name].append(time.perf_counter() - start)
            counts[name] = count.reset()
            print(f"repeat {r + 1}: {name:<15} {walls[name][-1]:7.1f} s", flush=True)
    load_after = os.getloadavg()[0]
    print(
        f"\n{args.model}: {len(seqs)} prompts ({args.per_class} per class), {len(targets)} grafted "
        f"into at layers {args.layers}, {n} new tokens; threads {torch.get_num_threads()}; "
        f"load average {load_before:.2f} -> {load_after:.2f}"
    )
    print(f"{'variant':<15} {'wall (s)':>9} {'passes':>7} {'tokens':>8}")
    for name in variants:
        passes, tokens = counts[name]
        print(f"{name:<15} {statistics.median(walls[name]):9.1f} {passes:7d} {tokens:8d}")
    for what in ("refusal", "graft"):
        before, after = walls[f"{what} before"], walls[f"{what} after"]
        print(
            f"{what}: before / after = {statistics.median(before) / statistics.median(after):.2f}"
        )
    same_refusal = results["refusal before"] == results["refusal after"]
    same_graft = all(
        b[2] == a[2]
        and torch.allclose(b[0], a[0], atol=1e-4)
        and torch.allclose(b[1], a[1], atol=1e-4)
        for b, a in zip(results["graft before"], results["graft after"], strict=True)
    )
    print(f"same output: refusal {same_refusal}; graft (texts, states, logits) {same_graft}")


if __name__ == "__main__":
    main()
