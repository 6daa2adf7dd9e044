"""The genealogy of a traced run: each problem's particles at every barrier and round end.

Kept only when a run is traced (``Algorithm.run(..., trace=True)``; ``tts run --trace`` or
``--report``), because it holds on to every particle's sites, also of those that resampling
or pruning discarded. For each problem the scheduler appends one ``Generation`` when all
its particles have arrived — at a step barrier, before the interpreter acts, and when all
have finished or died, before it restarts (an MH round, a Gibbs sweep) or finishes — so the
list says who stood where with which weight, and ``Node.parent`` says who descends from
whom: a particle that keeps its ``key`` from one generation to the next is the same
particle gone on; one with a new key was copied (resampled, expanded, proposed) from the
particle ``parent``. What the interpreter decided there goes in ``Generation.notes``
(``ess`` and ``resampled`` at a barrier that decided; MH's ``accepted`` per chain; particle
Gibbs's ``reference``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .handlers import Site


@dataclass(frozen=True)
class Node:
    """One particle as it stood in one generation."""

    key: tuple[int, ...]  # its identity: the randomness key it was born with
    parent: tuple[int, ...] | None  # the particle it was copied from; None: started afresh
    log_weight: float
    status: str  # at_barrier, finished or dead
    error: str | None
    value: Any  # its return value when finished
    sites: tuple[Site, ...]  # every site it has run so far


@dataclass
class Generation:
    """A problem's particles at one barrier (``event="barrier"``) or when all had ended
    (``event="end"``), and what the interpreter decided there."""

    step: int  # barriers the problem had passed
    event: str
    nodes: list[Node]
    notes: dict = field(default_factory=dict)


def snapshot(particles, step: int, event: str) -> Generation:
    """The generation of ``particles`` (``ppl.scheduler.Particle``) as they stand now."""
    return Generation(
        step,
        event,
        [Node(p.key, p.parent, p.log_weight, p.status, p.error, p.value, tuple(p.sites)) for p in particles],
    )
