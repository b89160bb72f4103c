"""Monitor benchmark: what screening a prompt costs, against the plain forward and 32-token generation.

For each prompt (one at a time, the live-monitor case) and each screening layer L, the median of
``--repeats`` timings of:

  (a) the plain forward of the prompt (the causal LM on the rendered tokens, no cache, last logits),
  (b) screening end to end: render + tokenize + forward stopped at layer L + probe head + score,
  (c) the stopped forward alone (``Screener.hidden``),
  (d) greedy generation of 32 new tokens (no stop token), what guarded generation adds screening to.

Target: (b) <= (L + 1) / num_layers * (a) + 5 ms (num_layers counts the embeddings: 31 for a 30-block
model). Usage:

    python bench/monitor.py --ckpt runs/probing/RUN/checkpoints/last.ckpt [--layers auto,2,8] \
        [--n 20] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from probing.features.identity import recorded_model
from probing.generation.generate import generate
from probing.models.batching import left_pad, position_ids_from_mask
from probing.models.load import load_model
from probing.monitor import Screener, choose_layer, load_probe
from probing.prompts import PromptSource, load_prompts


def timed(fn: Any, repeats: int) -> float:
    """Median seconds of ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def prompts(n: int) -> list[str]:
    half = n // 2
    sources = [
        PromptSource(path="normal", limit=n - half, shuffle=True, seed=1),
        PromptSource(path="malicious", limit=half, shuffle=True, seed=1),
    ]
    return load_prompts(sources)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--probe", default=None)
    ap.add_argument("--layers", default="auto", help="comma-separated: auto and/or layer indices")
    ap.add_argument("--n", type=int, default=20, help="prompts (half normal, half malicious)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gen-repeats", type=int, default=1)
    ap.add_argument("--gen-prompts", type=int, default=6, help="prompts timed for generation")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    probe = load_probe(args.ckpt, args.probe)
    start = time.perf_counter()
    lm = load_model(recorded_model(probe.feature_meta))
    load_s = time.perf_counter() - start
    num_layers = lm.parts.num_layers
    texts = prompts(args.n)
    layers = [choose_layer(probe, spec.strip()) for spec in args.layers.split(",")]
    base = Screener(lm, probe, layers[0], threshold=0.5)
    seqs = base.encode(texts)
    torch.manual_seed(0)

    @torch.inference_mode()
    def forward(seq: list[int]) -> None:
        ids, mask = left_pad([seq], base.pad_id)
        lm.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask),
            use_cache=False,
            logits_to_keep=1,
        )

    screeners = {layer: Screener(lm, probe, layer, threshold=0.5) for layer in layers}
    # Interleaved per prompt and repeat (forward, then each layer's screen and stopped forward), so
    # that load from other processes hits every variant alike; medians over repeats, then prompts.
    fwd, screen, stopped = [], {i: [] for i in layers}, {i: [] for i in layers}
    for text, seq in zip(texts, seqs, strict=True):
        calls = {"fwd": lambda s=seq: forward(s)}
        for i, m in screeners.items():
            calls[f"screen{i}"] = lambda t=text, m=m: m.screen([t])
            calls[f"stopped{i}"] = lambda s=seq, m=m, i=i: m.hidden([s], [i])
        for fn in calls.values():
            fn()  # warm-up
        times: dict[str, list[float]] = {k: [] for k in calls}
        for _ in range(args.repeats):
            for key, fn in calls.items():
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
        fwd.append(statistics.median(times["fwd"]))
        for i in layers:
            screen[i].append(statistics.median(times[f"screen{i}"]))
            stopped[i].append(statistics.median(times[f"stopped{i}"]))
    gen = [
        timed(lambda s=s: generate(lm, [s], args.new_tokens, stop_ids=set()), args.gen_repeats)
        for s in seqs[: args.gen_prompts]
    ]
    gen_fwd = [timed(lambda s=s: forward(s), args.repeats) for s in seqs[: args.gen_prompts]]
    fwd_ms = statistics.median(fwd) * 1e3
    gen_ms = statistics.median(gen) * 1e3
    rows = []
    for layer in layers:
        ratios = [a / b for a, b in zip(screen[layer], fwd, strict=True)]
        screen_ms = statistics.median(screen[layer]) * 1e3
        budget_ms = (layer + 1) / num_layers * fwd_ms + 5
        rows.append(
            {
                "layer": layer,
                "screen_ms": screen_ms,
                "stopped_forward_ms": statistics.median(stopped[layer]) * 1e3,
                "screen_over_forward": statistics.median(ratios),
                "budget_ms": budget_ms,
                "within_budget": screen_ms <= budget_ms,
                "prompts_within_budget": sum(
                    s * 1e3 <= (layer + 1) / num_layers * f * 1e3 + 5
                    for s, f in zip(screen[layer], fwd, strict=True)
                ),
                "screen_over_generation": screen_ms / gen_ms,
            }
        )
    result = {
        "model": probe.feature_meta.get("model"),
        "num_layers": num_layers,
        "threads": torch.get_num_threads(),
        "prompts": len(texts),
        "median_tokens": statistics.median(len(s) for s in seqs),
        "model_load_s": load_s,
        "forward_ms": fwd_ms,
        "generate_ms": gen_ms,
        "forward_ms_gen_prompts": statistics.median(gen_fwd) * 1e3,
        "new_tokens": args.new_tokens,
        "layers": rows,
    }
    print(json.dumps(result, indent=1))
    print()
    print(
        f"| layer | screen (ms) | stopped forward (ms) | screen / forward | budget (L+1)/{num_layers}·fwd + 5 ms "
        f"| prompts within | screen / generate {args.new_tokens} |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['layer']} | {r['screen_ms']:.1f} | {r['stopped_forward_ms']:.1f} | "
            f"{r['screen_over_forward']:.2f} | {r['budget_ms']:.1f} "
            f"({'met' if r['within_budget'] else 'missed'}) | {r['prompts_within_budget']}/{len(texts)} "
            f"| {r['screen_over_generation']:.3f} |"
        )
    print(
        f"\nplain forward {fwd_ms:.1f} ms, generate {args.new_tokens} tokens {gen_ms:.0f} ms "
        f"(medians over prompts; {torch.get_num_threads()} threads)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
