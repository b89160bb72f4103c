"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class ProbingError(Exception):
    """A problem with the user's input or configuration, not a bug.

    The message says what was expected, what was found and which option to change.
    """
