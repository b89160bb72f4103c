"""What `probing demo` does: its sizes, parsed without torch (``--help`` stays fast)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from probing.config import parse_config
from probing.models.config import DtypeOption


@dataclass
class DemoConfig:
    """The demo's sizes (defaults: about 6 minutes on 2 otherwise idle CPU cores).

    Args:
        output: folder of the report and every stage's files.
        model: model of the probing side.
        alignment_model: model of the alignment side (refusal, emotions, grafting).
        alignment_dtype: its compute dtype; ``auto``: bfloat16 where the CPU (AVX512-BF16, AMX) or
            GPU computes it natively, float32 elsewhere (the same choice on every run of a machine).
        normal: built-in normal prompts used.
        malicious: built-in malicious prompts used.
        jailbreak: built-in jailbreak prompts used.
        contrast: built-in contrast prompts (safe requests in harmful words) for "Does it generalise?".
        heldout: prompts of each held-out set and form (safe-sounding / harmful × imperative / question).
        crosslingual: prompts of each built-in set (normal, malicious, contrast) in English and in each
            translation (es, zh, ru) for "Does the model know more than the words?" (0: none).
        alignment_per_class: prompts per class on the alignment model.
        epochs: probe training epochs.
        graft_prompts: malicious prompts grafted into.
        graft_stride: graft at every n-th layer.
        max_new_tokens: greedy tokens judged for refusal.
        alignment: run the alignment side.
        compare: run the model/format comparison.
        compare_per_class: normal and malicious prompts per run of the comparison.
        threads: CPU threads of every stage (torch and the BLAS/OpenMP pools of numpy and
            scikit-learn). Default: chosen at the start of each stage — the cores other processes
            leave free (measured over 0.25 s), at least 1 (on a shared machine, threads
            that wait for a busy core made small forward passes and scikit-learn fits 2-10× slower)
            — except that stages training or applying torch probes keep torch's default: their
            numbers depend on the thread count, and the report must not depend on the load.
    """

    output: str = "demo_out"
    model: str = "smollm2-135m-instruct"
    alignment_model: str = "qwen2.5-coder-0.5b-instruct"
    alignment_dtype: DtypeOption = "auto"
    normal: int = 200
    malicious: int = 200
    jailbreak: int = 100
    contrast: int = 150
    heldout: int = 50
    crosslingual: int = 30
    alignment_per_class: int = 50
    epochs: int = 30
    graft_prompts: int = 24
    graft_stride: int = 4
    compare_per_class: int = 100
    max_new_tokens: int = 16
    alignment: bool = True
    compare: bool = True
    threads: int | None = None


def parse(argv: Sequence[str]) -> DemoConfig:
    return parse_config(
        DemoConfig, argv, "probing demo", "The whole pipeline on the embedded models."
    )
