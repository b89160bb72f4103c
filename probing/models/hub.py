"""A hub id without a network: its cached copy, or one line at once.

Without a connection, transformers retries the hub for ~50 s before it fails (or falls back to the
cache). A hub id is checked once here instead: when the hub answers, it is loaded as usual; when it
does not (or ``HF_HUB_OFFLINE`` is set), the cached snapshot's folder is loaded, with no request at
all; with nothing cached the command stops with a one-line :class:`~probing.errors.ProbingError`.
"""

from __future__ import annotations

import functools
import logging
import os

from probing.errors import ProbingError

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0  # one HEAD request to the hub's endpoint, no retries


@functools.cache
def hub_reachable(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether ``endpoint`` answers at all (any HTTP status), once per process."""
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=timeout)
    except Exception as err:  # noqa: BLE001 - any failure to get an answer means unreachable
        log.debug("%s is not reachable: %s", endpoint, err)
        return False
    return True


def cached_snapshot(repo_id: str, filename: str, revision: str | None) -> str | None:
    """The cached snapshot folder of ``repo_id`` at ``revision`` that holds ``filename``, or None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
    except ValueError:  # not a valid repo id
        return None
    return os.path.dirname(found) if isinstance(found, str) else None


def offline_folder(
    repo_id: str, gguf: str | None, revision: str | None, option: str = "--model.name"
) -> str | None:
    """None when the hub answers (load ``repo_id`` as usual); else the cached snapshot folder to load
    from instead. Raises :class:`ProbingError` at once when the hub is out of reach and nothing is
    cached."""
    from huggingface_hub import constants

    offline = constants.is_offline_mode()
    if not offline and hub_reachable(constants.ENDPOINT):
        return None
    folder = cached_snapshot(repo_id, gguf or "config.json", revision)
    why = "HF_HUB_OFFLINE is set" if offline else f"{constants.ENDPOINT} is not reachable"
    if folder is None:
        at = f" at revision {revision}" if revision else ""
        raise ProbingError(
            f"{option} {repo_id!r} is a hub id, {why} and it is not in the local cache "
            f"({constants.HF_HUB_CACHE}){at}; download it where the hub is reachable "
            f"(`hf download {repo_id}`) or give a built-in name, a local folder or a .gguf file"
        )
    log.info("%s: %s; loading the cached copy %s", repo_id, why, folder)
    return folder
