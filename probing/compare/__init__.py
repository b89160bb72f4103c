"""Compare models and prompt formats: the paper's per-layer accuracy grid across runs."""

from probing.compare.run import CompareConfig, CompareResult, RunResult, RunSpec, compare

__all__ = ["CompareConfig", "CompareResult", "RunResult", "RunSpec", "compare"]
