"""Benchmark: the all-layer heads' batched matmul in its two orders, forward + weight gradient.

    python bench/heads.py [--repeats 10]

``LinearHeads.forward_layer_major`` computes ``[L, N, D] -> [L, N, C]``. The plain order is
``baddbmm(bias, x, W)`` (``x @ W``; autograd's weight gradient ``x^T @ grad``); the order it uses is
``baddbmm(bias^T, W^T, x^T)^T`` (weight gradient ``grad^T @ x``). Same values up to float32 rounding;
each shape is timed both ways in turn, forward + backward of a mean-square loss (the weight and bias
gradients; ``x`` needs no gradient, as in every probe fit), median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

SHAPES = {  # name: (L, N, D, C)
    "paper linear (full batch, 700 rows)": (31, 700, 576, 2),
    "monitor linear (full batch, 2,300 rows)": (31, 2300, 576, 2),
    "3-way linear (700 rows)": (31, 700, 576, 3),
    "mini-batch linear (256 rows)": (31, 256, 576, 2),
    "MLP first layer (700 rows, 100 hidden)": (31, 700, 576, 100),
    "7B linear (full batch, 2,800 rows)": (33, 2800, 4096, 2),
    "7B mini-batch linear (256 rows)": (33, 256, 4096, 2),
}


def plain(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.baddbmm(b[:, None], x, w)


def transposed(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.baddbmm(b[:, :, None], w.transpose(1, 2), x.transpose(1, 2)).transpose(1, 2)


def time_one(fn, x, w, b) -> float:
    w.grad = b.grad = None
    start = time.perf_counter()
    fn(x, w, b).square().mean().backward()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(
        f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.2f}\n"
        f"{'shape':42s} {'L,N,D,C':>18s} {'x @ W (ms)':>11s} {'(W^T x^T)^T':>12s} {'ratio':>6s} {'max |diff|':>10s}"
    )
    for name, (L, N, D, C) in SHAPES.items():
        x = torch.randn(L, N, D)
        w = torch.randn(L, D, C, requires_grad=True)
        b = torch.randn(L, C, requires_grad=True)
        with torch.no_grad():
            diff = float((plain(x, w, b) - transposed(x, w, b)).abs().max())
        times: dict[str, list[float]] = {"plain": [], "transposed": []}
        repeats = args.repeats if D < 1024 else max(3, args.repeats // 3)
        for fn in (plain, transposed):  # warm-up
            time_one(fn, x, w, b)
        for _ in range(repeats):
            for key, fn in (("plain", plain), ("transposed", transposed)):
                times[key].append(time_one(fn, x, w, b))
        a, t = (statistics.median(times[k]) * 1000 for k in ("plain", "transposed"))
        print(f"{name:42s} {f'{L},{N},{D},{C}':>18s} {a:11.1f} {t:12.1f} {a / t:6.2f} {diff:10.1e}")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
