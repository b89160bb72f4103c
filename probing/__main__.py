"""``python -m probing COMMAND ...``: the same as the ``probing`` console script."""

from probing.cli import entry

if __name__ == "__main__":
    entry()
