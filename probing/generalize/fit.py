"""Full-batch training of all-layer probe heads on in-memory activations (the fast path of ``generalize``).

Linear heads are L2-regularised logistic regressions fitted with L-BFGS on the whole block at once (the
layers are independent, so the summed loss is minimised jointly). MLP heads (one hidden layer) are
trained full-batch with Adam; with validation rows, each layer keeps its weights from the epoch of its
lowest validation loss, and training stops when no layer has improved for ``patience`` epochs.
Inputs are standardised activations ``[N, L, D]``; the heads are the same components as the Lightning
probes' (:mod:`probing.probes.heads`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from probing.probes.heads import LinearHeads, MLPHeads

Kind = Literal["linear", "mlp"]


def _layer_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per layer of ``logits [L, N, C]``."""
    num_layers = logits.shape[0]
    flat = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), y.repeat(num_layers), reduction="none"
    )
    return flat.view(num_layers, -1).mean(1)


def _fit_linear(
    xt: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int
) -> nn.Module:
    head = LinearHeads(xt.shape[0], xt.shape[2], num_classes)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    opt = torch.optim.LBFGS(
        head.parameters(), lr=1, max_iter=max_iter, history_size=10, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (
            _layer_losses(head.forward_layer_major(xt), y).sum()
            + 0.5 * l2 * head.weight.square().sum()
        )
        loss.backward()
        return loss

    opt.step(closure)
    return head


def _fit_mlp(
    xt: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    l2: float,
    epochs: int,
    val: tuple[torch.Tensor, torch.Tensor] | None,
    patience: int,
    hidden: int,
) -> nn.Module:
    head = MLPHeads(xt.shape[0], xt.shape[2], num_classes, hidden=hidden)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=l2)
    best_loss = torch.full((xt.shape[0],), float("inf"))
    best = {k: v.detach().clone() for k, v in head.state_dict().items()}
    stale = 0
    for _ in range(epochs):
        opt.zero_grad()
        _layer_losses(head.forward_layer_major(xt), y).sum().backward()
        opt.step()
        if val is None:
            continue
        with torch.no_grad():
            losses = _layer_losses(head.forward_layer_major(val[0]), val[1])
            better = losses < best_loss - 1e-4
            if better.any():
                best_loss = torch.where(better, losses, best_loss)
                for k, v in head.state_dict().items():  # every tensor is indexed by layer first
                    best[k][better] = v[better]
                stale = 0
            else:
                stale += 1
        if stale >= patience:
            break
    if val is not None:
        head.load_state_dict(best)
    return head


def fit_heads(
    x: torch.Tensor,
    y: torch.Tensor,
    kind: Kind = "linear",
    num_classes: int = 2,
    l2: float = 1e-3,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    max_iter: int = 200,
    epochs: int = 400,
    patience: int = 30,
    hidden: int = 100,
) -> nn.Module:
    """All-layer heads fitted on ``x [N, L, D]`` (standardised) and labels ``y [N]``."""
    torch.manual_seed(seed)
    xt = x.float().transpose(0, 1).contiguous()
    y = torch.as_tensor(y, dtype=torch.long)
    if kind == "linear":
        return _fit_linear(xt, y, num_classes, l2, max_iter)
    val_t = None
    if val is not None and len(val[1]):
        val_t = (
            val[0].float().transpose(0, 1).contiguous(),
            torch.as_tensor(val[1], dtype=torch.long),
        )
    return _fit_mlp(xt, y, num_classes, l2, epochs, val_t, patience, hidden)


@torch.no_grad()
def score_heads(head: nn.Module, x: torch.Tensor, block: int = 4096) -> torch.Tensor:
    """Harm score ``[N, L]``: the probability of class 1 (binary heads) for ``x [N, L, D]``."""
    head.eval()
    parts = []
    for lo in range(0, len(x), block):
        xt = x[lo : lo + block].float().transpose(0, 1).contiguous()
        parts.append(head.forward_layer_major(xt).softmax(-1)[..., 1].transpose(0, 1))
    return torch.cat(parts) if parts else torch.zeros(0, getattr(head, "num_heads", 0))
