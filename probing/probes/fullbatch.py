"""Full-batch fitting of all-layer probe heads on in-memory activations (shared by ``probing fit``'s
full-batch mode and ``probing generalize``).

* Linear heads: L2-regularised logistic regression of every layer, fitted jointly with L-BFGS (the
  layers are independent, so the summed loss is minimised by minimising each). The objective is
  ``sum_l mean_i CE + l2 / 2 * |W|^2`` (bias not penalised) from zero weights: for two classes this is
  scikit-learn's ``LogisticRegression(C=2 / (l2 * n))`` (``C=1 / (l2 * n)`` for the multinomial case).
* MLP heads: full-batch AdamW. Each layer keeps its weights from the epoch of its lowest monitored loss
  (validation loss when there are validation rows, else training loss), and stops when it has not
  improved for ``patience`` epochs; a stopped layer drops out of the computation, and training ends
  when every layer has stopped.

Inputs are layer-major standardised activations ``xt [L, N, D]``; ``optimizer`` may be a Lightning
``LightningOptimizer`` wrapping the same torch optimizer, and ``backward`` Lightning's
``manual_backward`` (defaults: a plain torch optimizer and ``Tensor.backward``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from probing.probes.heads import LinearHeads, MLPHeads


def layer_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per layer of layer-major ``logits [L, N, C]``, ``[L]``."""
    num_layers = logits.shape[0]
    flat = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), y.repeat(num_layers), reduction="none"
    )
    return flat.view(num_layers, -1).mean(1)


def lbfgs(head: LinearHeads, max_iter: int = 100, tol: float = 1e-7) -> torch.optim.LBFGS:
    """The optimizer of :func:`fit_linear` (one ``step`` runs up to ``max_iter`` iterations and stops
    when no gradient entry of the summed objective exceeds ``tol``)."""
    return torch.optim.LBFGS(
        head.parameters(),
        lr=1,
        max_iter=max_iter,
        tolerance_grad=tol,
        history_size=10,
        line_search_fn="strong_wolfe",
    )


def lbfgs_iterations(optimizer: Any) -> int:
    """Iterations the last ``step`` of an L-BFGS optimizer (or its Lightning wrapper) ran."""
    opt = getattr(optimizer, "optimizer", optimizer)
    state = opt.state.get(opt.param_groups[0]["params"][0], {})
    return int(state.get("n_iter", 0))


def adamw(head: MLPHeads, lr: float = 1e-3, weight_decay: float = 1e-3) -> torch.optim.AdamW:
    """The optimizer of :func:`fit_mlp`."""
    return torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)


def fit_linear(
    head: LinearHeads,
    xt: torch.Tensor,
    y: torch.Tensor,
    l2: float,
    max_iter: int = 100,
    optimizer: Any = None,
    backward: Callable[[torch.Tensor], None] | None = None,
    tol: float = 1e-7,
    offset: torch.Tensor | None = None,
) -> float:
    """Fit ``head`` in place from zero weights; returns the final objective. Without ``optimizer``,
    :func:`lbfgs` with ``max_iter`` and ``tol``. ``offset [N, C]`` is added to every layer's logits
    while fitting (a fixed expert's log-probabilities: a product of experts), not afterwards."""
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    opt = optimizer if optimizer is not None else lbfgs(head, max_iter, tol)
    getattr(opt, "optimizer", opt).state.clear()  # a fresh fit: no curvature history
    backward = backward or torch.Tensor.backward

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = head.forward_layer_major(xt)
        if offset is not None:
            logits = logits + offset
        loss = layer_losses(logits, y).sum()
        loss = loss + 0.5 * l2 * head.weight.square().sum()
        backward(loss)
        return loss

    with torch.enable_grad():
        loss = opt.step(closure)
    return float(loss.detach())


def fit_mlp(
    head: MLPHeads,
    xt: torch.Tensor,
    y: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    epochs: int = 400,
    patience: int = 30,
    lr: float = 1e-3,
    weight_decay: float = 1e-3,
    min_delta: float = 1e-4,
    optimizer: Any = None,
    backward: Callable[[torch.Tensor], None] | None = None,
) -> dict[str, Any]:
    """Train ``head`` in place (full batch, per-layer early stopping); returns the epochs each layer
    trained until its best epoch (``best_epoch [L]``), the epochs run and the best monitored losses."""
    opt = optimizer if optimizer is not None else adamw(head, lr, weight_decay)
    backward = backward or torch.Tensor.backward
    num_layers = xt.shape[0]
    params = {
        "fc1.weight": head.fc1.weight,
        "fc1.bias": head.fc1.bias,
        "fc2.weight": head.fc2.weight,
        "fc2.bias": head.fc2.bias,
    }
    best = {k: v.detach().clone() for k, v in params.items()}
    best_loss = torch.full((num_layers,), float("inf"), device=xt.device)
    best_epoch = torch.zeros(num_layers, dtype=torch.long)
    stale = torch.zeros(num_layers, dtype=torch.long)
    active = torch.arange(num_layers, device=xt.device)
    epoch = 0

    def logits(x: torch.Tensor, idx: torch.Tensor, full: bool) -> torch.Tensor:
        if full:
            return head.forward_layer_major(x)
        h = torch.baddbmm(head.fc1.bias[idx, None], x[idx], head.fc1.weight[idx])
        h = head.dropout(torch.relu(h))
        return torch.baddbmm(head.fc2.bias[idx, None], h, head.fc2.weight[idx])

    def track(losses: torch.Tensor) -> None:  # losses of the active layers at the current weights
        nonlocal active
        better = losses < best_loss[active] - min_delta
        improved = active[better]
        if len(improved):
            best_loss[improved] = losses[better]
            best_epoch[improved.cpu()] = epoch
            with torch.no_grad():  # every tensor is indexed by layer first
                for k, v in params.items():
                    best[k][improved] = v[improved]
        stale[active.cpu()] += 1
        stale[improved.cpu()] = 0
        active = active[(stale[active.cpu()] < patience).to(active.device)]

    for epoch in range(epochs + 1):  # the weights after `epoch` steps
        full = len(active) == num_layers
        head.train()
        with torch.enable_grad():
            opt.zero_grad()
            train_losses = layer_losses(logits(xt, active, full), y)
            backward(train_losses.sum())
        if val is None:
            track(train_losses.detach())
        else:
            head.eval()
            with torch.no_grad():
                track(layer_losses(logits(val[0], active, full), val[1]))
        if len(active) == 0 or epoch == epochs:
            break
        opt.step()
    with torch.no_grad():
        for k, v in params.items():
            v.copy_(best[k])
    head.eval()
    return {"best_epoch": best_epoch, "epochs": epoch, "best_loss": best_loss}


def optimizers(
    heads: Iterable[nn.Module], lr: float, weight_decay: float, max_iter: int, tol: float
) -> list[torch.optim.Optimizer]:
    """One optimizer per head for :func:`fit_heads`: L-BFGS for linear heads, AdamW for MLP heads."""
    return [
        lbfgs(head, max_iter, tol)
        if isinstance(head, LinearHeads)
        else adamw(head, lr, weight_decay)
        for head in heads
    ]


def fit_heads(
    heads: Mapping[str, nn.Module],
    optimizers: Sequence[Any],
    xt: torch.Tensor,
    y: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor] | None,
    l2: float,
    epochs: int,
    patience: int,
    backward: Callable[[torch.Tensor], None] | None = None,
) -> list[str]:
    """Fit every head in place with its optimizer of :func:`optimizers` (linear heads with
    :func:`fit_linear`, MLP heads with :func:`fit_mlp`); returns one line per head for the log."""
    notes = []
    for (name, head), opt in zip(heads.items(), optimizers, strict=True):
        if isinstance(head, LinearHeads):
            fit_linear(head, xt, y, l2, optimizer=opt, backward=backward)
            notes.append(f"{name}: L-BFGS {lbfgs_iterations(opt)} iterations")
        else:
            info = fit_mlp(head, xt, y, val, epochs, patience, optimizer=opt, backward=backward)
            notes.append(
                f"{name}: {info['epochs']} AdamW steps, best step per layer "
                f"{int(info['best_epoch'].min())}-{int(info['best_epoch'].max())}"
            )
    return notes
