"""probing: explain LLM safety through intermediate hidden states."""

__version__ = "0.1.0"
