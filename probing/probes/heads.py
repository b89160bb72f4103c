"""All-layer probe heads: plain ``nn.Module`` components, one independent head per layer.

Input ``[B, L, D]`` (batch, selected layers, hidden size), output logits ``[B, L, C]``. The heads of all
layers are one parameter tensor each (``[L, D, C]``), computed together with one batched matmul
(``baddbmm`` over the layer dimension, in the transposed order that suits few outputs); no parameter is shared between layers, so a loss on layer i
gives zero gradient to layer j. ``forward_layer_major`` takes ``[L, B, D]`` and returns ``[L, B, C]``:
a module holding several heads transposes the batch once and shares it (at 7B shape the transpose
of a batch costs as much as a linear head's matmul).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _uniform_(t: torch.Tensor, fan_in: int) -> None:
    """``nn.Linear``'s default init, applied to every layer's slice."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    nn.init.uniform_(t, -bound, bound)


class LinearHeads(nn.Module):
    """``L`` independent linear classifiers: ``logits[b, l] = x[b, l] @ weight[l] + bias[l]``."""

    def __init__(self, num_heads: int, in_features: int, out_features: int):
        super().__init__()
        self.num_heads, self.in_features, self.out_features = num_heads, in_features, out_features
        self.weight = nn.Parameter(torch.empty(num_heads, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_heads, out_features))
        _uniform_(self.weight, in_features)
        _uniform_(self.bias, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.num_heads, self.in_features)
        return self.forward_layer_major(x.transpose(0, 1).contiguous()).transpose(0, 1)

    def forward_layer_major(self, xt: torch.Tensor) -> torch.Tensor:
        """``[L, B, D] -> [L, B, C]``, computed as ``(weight^T @ xt^T)^T``: with few outputs (C ≪ D)
        that product and its weight gradient (``grad^T @ xt``) run 2-6x faster than ``xt @ weight``
        and ``xt^T @ grad`` (bench/heads.py); about the same with many (an MLP's hidden layer)."""
        out = torch.baddbmm(self.bias[:, :, None], self.weight.transpose(1, 2), xt.transpose(1, 2))
        return out.transpose(1, 2)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, in={self.in_features}, out={self.out_features}"


class MLPHeads(nn.Module):
    """``L`` independent one-hidden-layer MLPs (ReLU, dropout), computed with two batched matmuls."""

    def __init__(
        self,
        num_heads: int,
        in_features: int,
        out_features: int,
        hidden: int = 100,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.num_heads, self.in_features, self.out_features = num_heads, in_features, out_features
        self.hidden = hidden
        self.fc1 = LinearHeads(num_heads, in_features, hidden)
        self.fc2 = LinearHeads(num_heads, hidden, out_features)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.num_heads, self.in_features)
        return self.forward_layer_major(x.transpose(0, 1).contiguous()).transpose(0, 1)

    def forward_layer_major(self, xt: torch.Tensor) -> torch.Tensor:
        """``[L, B, D] -> [L, B, C]``."""
        return self.fc2.forward_layer_major(
            self.dropout(torch.relu(self.fc1.forward_layer_major(xt)))
        )

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, in={self.in_features}, hidden={self.hidden}, out={self.out_features}"


def _check_input(x: torch.Tensor, num_heads: int, in_features: int) -> None:
    if x.dim() != 3 or x.shape[1] != num_heads or x.shape[2] != in_features:
        raise ValueError(
            f"probe heads expect activations [batch, {num_heads} layers, {in_features}], got {tuple(x.shape)}"
        )
