"""Build step: ship the repository's top-level ``datasets/`` and ``configs/`` inside the package.

Everything else is configured in ``pyproject.toml``. The folders stay where they are in the
repository; ``build_py`` copies them to ``probing/_data/`` in the wheel, where
:func:`probing.resources.builtin_path` finds them (in a checkout or an editable install it reads the
folders themselves). Every file matching the patterns is shipped, so a new ``datasets/*.csv`` needs
no change here. ``MANIFEST.in`` puts the same files into the sdist.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUILTIN_DATA = {
    "datasets": ("*.csv", "*.yaml", "*.md"),
    "configs": ("**/*.yaml",),
}


class BuildPyWithData(build_py):
    """``build_py`` that also copies the built-in data into ``probing/_data/``."""

    def run(self):
        super().run()
        for folder, patterns in BUILTIN_DATA.items():
            files = {
                f for pattern in patterns for f in (ROOT / folder).glob(pattern) if f.is_file()
            }
            for src in sorted(files):
                target = Path(self.build_lib, "probing", "_data", src.relative_to(ROOT))
                self.mkpath(str(target.parent))
                self.copy_file(str(src), str(target))


setup(cmdclass={"build_py": BuildPyWithData})
