"""Compare models and prompt formats: the paper's per-layer accuracy grid across runs.

``compare`` is imported on first use, so that ``probing.compare.spec`` (read by ``--help``) does not
import torch.
"""

from probing.lazy import lazy_names

__all__, __getattr__ = lazy_names(
    __name__,
    {
        "run": ["compare"],
        "spec": ["CompareConfig", "CompareResult", "RunResult", "RunSpec"],
    },
)
