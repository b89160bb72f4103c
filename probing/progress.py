"""One home for progress bars: tqdm on stderr with counts, rates and time left.

A bar appears only once its work has taken :data:`DELAY` seconds, so short work stays quiet and long
work (a long shared prefix, a grafting sweep) always shows that it moves. ``enabled=False`` (the
commands' ``--progress false``) turns it off.
"""

from __future__ import annotations

from tqdm.auto import tqdm

DELAY = 0.5  # seconds before a bar is drawn


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True, initial: int = 0) -> tqdm:
    """A bar of ``total`` ``unit``s (``with progress_bar(...) as bar: ... bar.update(n)``)."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=not enabled,
        dynamic_ncols=True,
        delay=DELAY,
    )
