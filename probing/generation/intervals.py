"""95 % intervals for refusal rates and for changes in them, on a few dozen or hundred prompts.

A rate (``k`` of ``n`` prompts refused) gets the Wilson score interval, which stays inside [0, 1] and
is not empty at 0 % or 100 % as a bootstrap's would be. A change between two conditions gets
Newcombe's hybrid score interval (method 10): *paired* when both conditions ran on the same prompts
(grafted vs ungrafted: each prompt's two verdicts are compared, so what every condition shares drops
out), *independent* when they ran on different prompts (real jailbreaks vs plain requests).
Newcombe, Statistics in Medicine 17 (1998) 873–890 and 2635–2650.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95 % interval


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (``nan`` bounds for ``n = 0``)."""
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= k <= n:
        raise ValueError(f"k = {k} is not within 0..{n}")
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # the bounds are exact at the edges (rounding would put 0 % a hair above 0)
    return (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)


def _hybrid(p1: float, l1: float, u1: float, p2: float, l2: float, u2: float, phi: float):
    delta = math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    eps = math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    diff = p1 - p2
    return diff, max(-1.0, diff - delta), min(1.0, diff + eps)


def paired_change(after: Sequence[bool], before: Sequence[bool]) -> tuple[float, float, float]:
    """Change in the rate ``mean(after) - mean(before)`` over the same prompts, with its interval."""
    if len(after) != len(before):
        raise ValueError(f"paired verdicts differ in length: {len(after)} vs {len(before)}")
    n = len(after)
    if n == 0:
        return math.nan, math.nan, math.nan
    a = sum(1 for x, y in zip(after, before, strict=True) if x and y)
    b = sum(1 for x, y in zip(after, before, strict=True) if x and not y)
    c = sum(1 for x, y in zip(after, before, strict=True) if y and not x)
    d = n - a - b - c
    product = (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0.0 if product == 0 else (a * d - b * c) / math.sqrt(product)
    (l1, u1), (l2, u2) = wilson(a + b, n), wilson(a + c, n)
    return _hybrid((a + b) / n, l1, u1, (a + c) / n, l2, u2, phi)


def independent_change(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float]:
    """Change ``k1/n1 - k2/n2`` between two sets of different prompts, with its interval."""
    if n1 <= 0 or n2 <= 0:
        return math.nan, math.nan, math.nan
    (l1, u1), (l2, u2) = wilson(k1, n1), wilson(k2, n2)
    return _hybrid(k1 / n1, l1, u1, k2 / n2, l2, u2, 0.0)


def shown(rate: float, low: float, high: float) -> str:
    """``38 % [27–50]``: a rate and its interval in percent, as reports write them."""
    if math.isnan(rate):
        return "n/a"
    return f"{rate:.0%} [{low * 100:.0f}–{high * 100:.0f}]"


def shown_change(change: float, low: float, high: float) -> str:
    """``−12 points [−20, −4]``: a change of a rate, in percentage points."""
    if math.isnan(change):
        return "n/a"
    return f"{change * 100:+.0f} points [{low * 100:+.0f}, {high * 100:+.0f}]"
