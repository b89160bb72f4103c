"""Stage 1c: greedy continuations and the refusal judge (is the model aligned enough to study?)."""

from probing.generation.generate import Generation, generate, stop_token_ids
from probing.generation.judge import KeywordJudge, Verdict, load_judge

__all__ = ["Generation", "KeywordJudge", "Verdict", "generate", "load_judge", "stop_token_ids"]
