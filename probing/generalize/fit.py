"""Full-batch training of all-layer probe heads on in-memory activations (the fast path of ``generalize``).

Linear heads are L2-regularised logistic regressions fitted with L-BFGS on the whole block at once (the
layers are independent, so the summed loss is minimised jointly). MLP heads (one hidden layer) are
trained full-batch with AdamW; each layer keeps its weights from the epoch of its lowest validation
loss and stops when it has not improved for ``patience`` epochs. The fitting itself is
:mod:`probing.probes.fullbatch`, shared with ``probing fit``'s full-batch mode.
Inputs are standardised activations ``[N, L, D]``; the heads are the same components as the Lightning
probes' (:mod:`probing.probes.heads`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from probing.probes.fullbatch import fit_linear, fit_mlp
from probing.probes.heads import LinearHeads, MLPHeads

Kind = Literal["linear", "mlp"]


def fit_heads(
    x: torch.Tensor,
    y: torch.Tensor,
    kind: Kind = "linear",
    num_classes: int = 2,
    l2: float = 1e-3,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    max_iter: int = 200,
    tol: float = 1e-4,
    epochs: int = 400,
    patience: int = 30,
    hidden: int = 100,
    offset: torch.Tensor | None = None,
) -> nn.Module:
    """All-layer heads fitted on ``x [N, L, D]`` (standardised) and labels ``y [N]``; linear heads stop
    when no gradient entry exceeds ``tol`` (as `probing fit`'s full-batch mode). ``offset [N, C]``
    (linear heads only): log-probabilities of a fixed expert added while fitting (product of experts)."""
    torch.manual_seed(seed)
    xt = x.float().transpose(0, 1).contiguous()
    y = torch.as_tensor(y, dtype=torch.long)
    if kind == "linear":
        head = LinearHeads(xt.shape[0], xt.shape[2], num_classes)
        fit_linear(head, xt, y, l2, max_iter, tol=tol, offset=offset)
        return head
    val_t = None
    if val is not None and len(val[1]):
        val_t = (
            val[0].float().transpose(0, 1).contiguous(),
            torch.as_tensor(val[1], dtype=torch.long),
        )
    head = MLPHeads(xt.shape[0], xt.shape[2], num_classes, hidden=hidden)
    fit_mlp(head, xt, y, val_t, epochs, patience, lr=1e-3, weight_decay=l2)
    return head


@torch.no_grad()
def score_heads(head: nn.Module, x: torch.Tensor, block: int = 4096) -> torch.Tensor:
    """Harm score ``[N, L]``: the probability of class 1 (binary heads) for ``x [N, L, D]``."""
    head.eval()
    parts = []
    for lo in range(0, len(x), block):
        xt = x[lo : lo + block].float().transpose(0, 1).contiguous()
        parts.append(head.forward_layer_major(xt).softmax(-1)[..., 1].transpose(0, 1))
    return torch.cat(parts) if parts else torch.zeros(0, getattr(head, "num_heads", 0))
