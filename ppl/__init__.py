"""ppl: a small probabilistic-programming language for inference-time scaling of LLMs.

A program says how an LM proposes text step by step and how rewards, verifiers and
constraints weight it; an interpreter (importance sampling, SMC, exact enumeration …)
runs every particle of every problem on a few batched engine calls.
"""

from .errors import (
    AllParticlesDeadError,
    EngineError,
    MissingRandomnessError,
    NotEnumerableError,
    PPLError,
)
from .handlers import Messenger, seed, trace
from .inference import Algorithm, Results, infer
from .interfaces import GenRequest, NextTokenRequest, RewardRequest, ScoreRequest, Segment, ToolRequest, Usage
from .nested import Answers, nested
from .posterior import Diagnostics, Posterior, WeightedParticle
from .primitives import condition, gen, observe, reward, sample, score, select, steps, tool, twist
from .program import Program, program

__version__ = "0.1.0"

_SUBPACKAGES = ("grammar", "backends", "algorithms", "app")


def __getattr__(name: str):
    """``ppl.grammar``, ``ppl.backends``, ``ppl.algorithms`` and ``ppl.app`` after a bare
    ``import ppl`` (PEP 562): each is imported on first use, so the core itself never loads
    the layers above it (docs/design.md §2)."""
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Algorithm",
    "AllParticlesDeadError",
    "Answers",
    "Diagnostics",
    "EngineError",
    "GenRequest",
    "Messenger",
    "MissingRandomnessError",
    "NextTokenRequest",
    "NotEnumerableError",
    "PPLError",
    "Posterior",
    "Program",
    "Results",
    "RewardRequest",
    "ScoreRequest",
    "Segment",
    "ToolRequest",
    "Usage",
    "WeightedParticle",
    "condition",
    "gen",
    "infer",
    "nested",
    "observe",
    "program",
    "reward",
    "sample",
    "score",
    "seed",
    "select",
    "steps",
    "tool",
    "trace",
    "twist",
]
