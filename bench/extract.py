"""Extraction benchmark: `probing extract` vs a bare batched forward vs the seed code's way.

Each variant runs as a whole process (imports and model load included), on the paper's 500 normal +
first 500 malicious prompts (../shared/data) with the embedded SmolLM2-135M-Instruct:

  (a) `probing extract` (all layers, lens top-5, HDF5 writes)
  (b) the floor: the same length-sorted, left-padded batches through the bare decoder, last-token
      states of every layer kept, no lens, no writing
  (c) the seed code's way: one prompt at a time, output_hidden_states, logit lens over every position
      of every layer (a sample of prompts is timed and extrapolated)

and the peak RSS of (a) at N and 5·N prompts (the data repeated). Usage:

    python bench/extract.py [--n 1000] [--batch-size 16] [--seed-sample 20] [--skip-rss]

``--forward`` instead times the forward pass alone, in one process after the model load, each batch
through every variant in turn (rotating the order, so that a change in the machine's load hits all
alike): the bare batched forward (the floor), and ``ActivationReader`` with the lens off and on,
each batch run whole and with the prompts' shared head (the chat template's system turn) run once
and its KV cache repeated; the shared-head reader with the lens on runs three times: the lens'
CPU candidate matmul chosen for this machine (``auto``) and each forced path
(``PROBING_LENS_MATMUL=float32`` / ``bfloat16``, see probing/models/lens_matmul.py):

    python bench/extract.py --forward [--n 1000] [--batch-size 16] [--isa avx2]

Every figure is printed beside the CPU capability it was measured with (torch's capability and the
bfloat16 flags) and the lens path chosen. ``--isa avx2`` runs the children with oneDNN, ATen and
MKL capped at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2``):
an emulation of an AVX2 CPU on this one, not a measurement of one.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
LENS_ENV = "PROBING_LENS_MATMUL"
ISA_CAPS = {
    "avx2": {
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    }
}


def paper_prompts(n: int) -> list[tuple[str, str]]:
    """(label, prompt): half normal, half malicious (the first 500 of each, repeated past 1,000)."""

    def read(name: str) -> list[str]:
        with open(DATA / name, newline="") as f:
            return [row["goal"] for row in csv.DictReader(f)]

    normal = read("normal_prompts.csv")[:500]
    malicious = read("advbench_plus_malicious.csv")[:500]
    half = n // 2
    return [("normal", normal[i % 500]) for i in range(n - half)] + [
        ("malicious", malicious[i % 500]) for i in range(half)
    ]


def write_sources(n: int, folder: Path) -> list[dict]:
    rows = paper_prompts(n)
    sources = []
    for label in ("normal", "malicious"):
        path = folder / f"{label}.txt"
        path.write_text("\n".join(p for lab, p in rows if lab == label) + "\n")
        sources.append({"path": str(path), "label": label})
    return sources


def run_process(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Wall time, peak RSS (MiB) and stdout of one child process (``env`` added to ours)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=err, text=True, cwd=REPO, env={**os.environ, **(env or {})}
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0), err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"failed: {' '.join(cmd)}\n{err.read()[-2000:]}")
        return wall, usage.ru_maxrss // 1024, out.read()


def cpu_line() -> str:
    """This process's CPU capability and the lens path ``auto`` chose (with its reason)."""
    from probing.models.lens_matmul import auto_lens_matmul, cpu_capability

    chosen = auto_lens_matmul()
    return f"{cpu_capability()}; lens auto -> {chosen.path} ({chosen.reason})"


def child_cpu() -> None:
    sys.stdout.write(cpu_line() + "\n")


def variant_a(
    n: int, batch_size: int, folder: Path, env: dict[str, str] | None = None
) -> tuple[float, int]:
    sources = write_sources(n, folder)
    out = folder / f"a-{n}.h5"
    cmd = [
        sys.executable,
        "-m",
        "probing.cli",
        "extract",
        "--prompts",
        json.dumps(sources),
        "--output",
        str(out),
        "--batch_size",
        str(batch_size),
        "--template",
        "chat",
        "--progress",
        "false",
        "--overwrite",
        "true",
    ]
    wall, rss, _ = run_process(cmd, env)
    return wall, rss


def child_floor(n: int, batch_size: int) -> None:
    import torch

    from probing.models import ModelConfig, load_model
    from probing.prompts import render

    lm = load_model(ModelConfig())
    rendered = render(lm.tokenizer, [p for _, p in paper_prompts(n)], "chat")
    ids = sorted(rendered.ids, key=len, reverse=True)
    pad = lm.tokenizer.pad_token_id
    kept = []
    with torch.inference_mode():
        for lo in range(0, len(ids), batch_size):
            kept.append(_floor_states(lm, ids[lo : lo + batch_size], pad))
    sys.stdout.write(f"{sum(k.shape[0] for k in kept)}\n")


def _floor_states(lm, batch: list, pad: int):
    """The floor: one bare batched backbone forward, every layer's last-token state ``[B, L, D]``."""
    import torch

    from probing.models.batching import left_pad, position_ids_from_mask

    x, mask = left_pad(batch, pad)
    out = lm.parts.backbone(
        input_ids=x,
        attention_mask=mask,
        position_ids=position_ids_from_mask(mask),
        use_cache=False,
        output_hidden_states=True,
    )
    return torch.stack([h[:, -1] for h in out.hidden_states], 1)


def child_forward(n: int, batch_size: int) -> None:
    """Forward-pass variants over the same batches, interleaved batch by batch."""
    import torch

    from probing.features.activations import ActivationReader
    from probing.models import ModelConfig, load_model
    from probing.models.batching import common_prefix
    from probing.prompts import render

    lm = load_model(ModelConfig())
    rendered = render(lm.tokenizer, [p for _, p in paper_prompts(n)], "chat")
    ids = sorted(rendered.ids, key=len, reverse=True)
    pad = lm.tokenizer.pad_token_id

    def floor(batch):
        return _floor_states(lm, batch, pad)

    def reader(shared: list | None, top_k: int):  # top_k 0: lens off (`--lens_top_k 0`)
        r = ActivationReader(lm, "last", top_k=top_k)
        if shared is not None:
            r.share_prefix(shared)
        return r

    def forced(path: str, run):  # the lens' CPU candidate matmul forced to `path`
        def call(batch):
            os.environ[LENS_ENV] = path
            try:
                return run(batch)
            finally:
                del os.environ[LENS_ENV]

        return call

    head = common_prefix(ids)
    with torch.inference_mode():
        floor(ids[:batch_size])  # warm-up: the first forward pass is slow
    t0 = time.perf_counter()
    variants = {
        "bare batched forward (floor)": floor,
        "reader, whole batches, lens off": reader(None, 0),
        "reader, whole batches, lens on": reader(None, 5),
        "reader, shared head, lens off": reader(ids, 0),
        "reader, shared head, lens on": reader(ids, 5),
        "... lens on, float32 path": forced("float32", reader(ids, 5)),
        "... lens on, bfloat16 path": forced("bfloat16", reader(ids, 5)),
    }
    setup = time.perf_counter() - t0  # the two shared heads' forward passes
    names = list(variants)
    times = dict.fromkeys(names, 0.0)
    diff, lens_differ, paths_differ, paths_logit_diff = 0.0, 0, 0, 0.0
    load = os.getloadavg()[0]
    with torch.inference_mode():
        for b, lo in enumerate(range(0, len(ids), batch_size)):
            batch = ids[lo : lo + batch_size]
            outs = {}
            for j in range(len(names)):
                name = names[(b + j) % len(names)]
                start = time.perf_counter()
                outs[name] = variants[name](batch)
                times[name] += time.perf_counter() - start
            whole, shared = outs[names[2]], outs[names[4]]
            diff = max(diff, float((whole.hidden - shared.hidden).abs().max()))
            lens_differ += int((whole.lens_ids != shared.lens_ids).any(-1).sum())
            f32, b16 = outs[names[5]], outs[names[6]]
            paths_differ += int((f32.lens_ids != b16.lens_ids).any(-1).sum())
            paths_logit_diff = max(
                paths_logit_diff, float((f32.lens_logits - b16.lens_logits).abs().max())
            )
    width = sum(
        max(map(len, ids[lo : lo + batch_size])) * len(ids[lo : lo + batch_size])
        for lo in range(0, len(ids), batch_size)
    )
    tails = head + sum(
        (max(map(len, ids[lo : lo + batch_size])) - head) * len(ids[lo : lo + batch_size])
        for lo in range(0, len(ids), batch_size)
    )
    result = {
        "prompts": len(ids),
        "head_tokens": head,
        "mean_tokens": sum(map(len, ids)) / len(ids),
        "tokens_whole": width,
        "tokens_shared": tails,
        "times": times,
        "head_setup_s": setup,
        "load_start": load,
        "load_end": os.getloadavg()[0],
        "max_abs_diff": diff,
        "lens_sets_differ": lens_differ,
        "paths_sets_differ": paths_differ,
        "paths_max_logit_diff": paths_logit_diff,
        "threads": torch.get_num_threads(),
        "cpu": cpu_line(),
    }
    sys.stdout.write(json.dumps(result) + "\n")


def print_forward(r: dict) -> None:
    floor = r["times"]["bare batched forward (floor)"]
    print(
        f"{r['prompts']} prompts, mean {r['mean_tokens']:.1f} tokens, shared head {r['head_tokens']}"
        f" tokens; tokens run: whole batches {r['tokens_whole']}, shared head {r['tokens_shared']};"
        f" {r['threads']} threads; load average {r['load_start']:.2f} -> {r['load_end']:.2f}"
    )
    print(f"cpu: {r['cpu']}")
    cpu = r["cpu"].split(";")[0]
    print(f"{'variant':34s} {'s':>8s} {'floor/variant':>14s}  cpu, lens path")
    for name, t in r["times"].items():
        path = "forced" if "path" in name else "auto" if "lens on" in name else "-"
        print(f"{name:34s} {t:8.1f} {floor / t:14.2f}  {cpu}, {path}")
    t = r["times"]
    print(
        "lens on / lens off: shared head"
        f" {t['reader, shared head, lens on'] / t['reader, shared head, lens off']:.2f},"
        f" whole batches {t['reader, whole batches, lens on'] / t['reader, whole batches, lens off']:.2f}"
    )
    print(
        f"shared head set-up (2 readers) {r['head_setup_s']:.2f} s; shared vs whole (lens on): max |diff|"
        f" {r['max_abs_diff']:.2e}, rows x layers with another top-5 set {r['lens_sets_differ']}"
    )
    print(
        f"float32 vs bfloat16 lens path: rows x layers with another top-5 set"
        f" {r['paths_sets_differ']}, max |logit diff| {r['paths_max_logit_diff']:.2e};"
        f" bfloat16 / float32 time {t['... lens on, bfloat16 path'] / t['... lens on, float32 path']:.2f}"
    )


def child_seed(n: int, sample: int) -> None:
    """One prompt at a time, full hidden states, lens over every position and layer."""
    import torch

    from probing.models import ModelConfig, load_model
    from probing.prompts import render

    t0 = time.perf_counter()
    lm = load_model(ModelConfig())
    load = time.perf_counter() - t0
    prompts = [p for _, p in paper_prompts(n)]
    step = max(1, len(prompts) // sample)
    chosen = prompts[::step][:sample]
    rendered = render(lm.tokenizer, chosen, "chat")
    t1 = time.perf_counter()
    with torch.inference_mode():
        for ids in rendered.ids:
            out = lm.model(torch.tensor([ids]), output_hidden_states=True, use_cache=False)
            for i, h in enumerate(out.hidden_states):
                hn = h if i == len(out.hidden_states) - 1 else lm.parts.final_norm(h)
                lm.parts.unembed(hn).topk(5, dim=-1)
    per_prompt = (time.perf_counter() - t1) / len(chosen)
    sys.stdout.write(
        json.dumps({"load": load, "per_prompt": per_prompt, "sample": len(chosen)}) + "\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed-sample", type=int, default=20)
    ap.add_argument("--skip-rss", action="store_true", help="skip the 5·N run of (a)")
    ap.add_argument("--forward", action="store_true", help="forward-pass variants in one process")
    ap.add_argument(
        "--isa", choices=sorted(ISA_CAPS), help="cap oneDNN/ATen at this ISA (an emulation)"
    )
    ap.add_argument("--child", choices=["floor", "seed", "forward", "cpu"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "cpu":
        return child_cpu()
    if args.child == "forward":
        return child_forward(args.n, args.batch_size)
    if args.child == "floor":
        return child_floor(args.n, args.batch_size)
    if args.child == "seed":
        return child_seed(args.n, args.seed_sample)
    if not DATA.exists():
        raise SystemExit(f"the paper's data is not at {DATA}")
    py = sys.executable
    me = str(Path(__file__).resolve())
    env = {**ISA_CAPS.get(args.isa or "", {}), LENS_ENV: "auto"}
    sizes = ["--n", str(args.n), "--batch-size", str(args.batch_size)]
    if args.forward:
        _, _, out = run_process([py, me, "--child", "forward", *sizes], env)
        return print_forward(json.loads(out.strip().splitlines()[-1]))
    cpu = run_process([py, me, "--child", "cpu"], env)[2].strip().splitlines()[-1]
    print(f"cpu: {cpu}")
    cpu = f"[{cpu.split(';')[0]}]"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        a_wall, a_rss = variant_a(args.n, args.batch_size, folder, env)
        print(
            f"(a) probing extract, {args.n} prompts: {a_wall:.1f} s, peak RSS {a_rss} MiB  {cpu}, lens auto"
        )
        a32_wall, _ = variant_a(args.n, args.batch_size, folder, {**env, LENS_ENV: "float32"})
        print(f"(a') the same, lens path forced to float32: {a32_wall:.1f} s  {cpu}")
        b_wall, b_rss, _ = run_process([py, me, "--child", "floor", *sizes], env)
        print(f"(b) bare batched forward (floor):  {b_wall:.1f} s, peak RSS {b_rss} MiB  {cpu}")
        c_wall, _, out = run_process(
            [py, me, "--child", "seed", "--n", str(args.n), "--seed-sample", str(args.seed_sample)],
            env,
        )
        seed = json.loads(out.strip().splitlines()[-1])
        c_est = c_wall - seed["per_prompt"] * seed["sample"] + seed["per_prompt"] * args.n
        print(
            f"(c) seed code's way: {seed['per_prompt']:.3f} s/prompt over {seed['sample']} prompts, "
            f"estimated {c_est:.1f} s for {args.n} (process overhead {c_wall - seed['per_prompt'] * seed['sample']:.1f} s)"
        )
        print(
            f"speed of (a) relative to the floor b/a = {b_wall / a_wall:.2f}  (target >= 0.9)  {cpu}"
        )
        print(f"  with the float32 lens path   b/a' = {b_wall / a32_wall:.2f}  {cpu}")
        print(
            f"speed-up over the seed code       c/a = {c_est / a_wall:.1f}  (target >= 10)  {cpu}"
        )
        if not args.skip_rss:
            big_wall, big_rss = variant_a(5 * args.n, args.batch_size, folder, env)
            print(
                f"(a) probing extract, {5 * args.n} prompts: {big_wall:.1f} s, peak RSS {big_rss} MiB  {cpu}"
            )
            print(
                f"peak RSS {5 * args.n} / {args.n} prompts = {big_rss / a_rss:.3f}  (target <= 1.10)"
            )


if __name__ == "__main__":
    main()
