"""Nested inference as a site: ``ppl.nested(program, args, algorithm)`` (docs/design.md, "Compound programs").

Inside a program, ``pool = ppl.nested(draft, (lm, problem), ImportanceSampling(8))`` runs
``algorithm`` on ``draft`` for that one problem and gives its weighted answers (``Answers``).

Semantics: the site is a random choice whose law is the inner interpreter's *output law* —
the distribution, over the interpreter's randomness, of the weighted particles it returns —
and it is drawn exactly, so the outer weight is unchanged (the site's log weight is 0: the
inner weights and the inner evidence never enter the outer target). The outer program sees
the inner particles as values and may weigh by them itself (``score``).

Execution: under the scheduler the inner run is a *child problem* of the same scheduler —
its particles join the same rounds, so their engine requests go in the same batched or
streamed calls as everyone else's; the outer particle waits at the site until the child
finishes, and the answer is recorded like any other, so copies replay it. Its randomness is
keyed by the outer particle's key and the site's position (``ChildSource``). In direct
execution (``ppl.seed``) and exact enumeration the inner run is a separate sub-run
(``SubRun``); exact enumeration accepts only an exact inner interpreter (enumeration).

    >>> import ppl
    >>> from ppl.algorithms import ImportanceSampling
    >>> from ppl.backends.tabular import TabularLM
    >>> lm = TabularLM.random(["a", "b"], order=1, seed=0)
    >>> @ppl.program
    ... def draft(lm):
    ...     return ppl.gen(lm, (), max_tokens=2).text
    >>> @ppl.program
    ... def pick(lm):
    ...     pool = ppl.nested(draft, (lm,), ImportanceSampling(4))
    ...     return pool.majority()
    >>> results = ImportanceSampling(3).run(pick, [(lm,)], seed=0)
    >>> results.stats.batch_sizes[("tabular", "generate")]  # 3 outer × 4 inner particles, one call
    [12]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .handlers import Done, Message, Need, apply_stack
from .posterior import Diagnostics, Posterior, WeightedParticle, logsumexp
from .program import as_program
from .randomness import SeededSource, Source, Stream


@dataclass(frozen=True)
class Answers:
    """The weighted answers of an inner run: its particles' values, log weights, and log Ẑ.

    Queries as on a ``Posterior``: ``best()``, ``majority()``, ``weighted_vote()``,
    ``distribution()``, and ``weights`` (normalised; all zero when every particle died).
    """

    values: tuple
    log_weights: tuple[float, ...]
    log_evidence: float | None

    @classmethod
    def of(cls, posterior: Posterior) -> Answers:
        return cls(
            tuple(posterior.values),
            tuple(float(w) for w in posterior.log_weights),
            posterior.log_evidence,
        )

    def posterior(self) -> Posterior:
        particles = [
            WeightedParticle(v, w, [], "finished" if w > -math.inf else "dead")
            for v, w in zip(self.values, self.log_weights)
        ]
        return Posterior(particles, self.log_evidence, Diagnostics("nested", len(particles)))

    @property
    def weights(self) -> tuple[float, ...]:
        total = logsumexp(self.log_weights)
        if total == -math.inf:
            return tuple(0.0 for _ in self.log_weights)
        return tuple(math.exp(w - total) for w in self.log_weights)

    @property
    def all_dead(self) -> bool:
        return not any(w > -math.inf for w in self.log_weights)

    def best(self):
        return self.posterior().best()

    def majority(self, key=None):
        return self.posterior().majority(key)

    def weighted_vote(self, key=None):
        return self.posterior().weighted_vote(key)

    def distribution(self, key=None) -> dict:
        return self.posterior().distribution(key)

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class InferRequest:
    """Run ``algorithm`` on ``program`` for one ``problem`` (a tuple or dict of its inputs)."""

    program: Any
    problem: Any
    algorithm: Any
    seed: int | None = None

    method: ClassVar[str] = "infer"

    def parts(self) -> tuple[InferRequest, ...]:
        return (self,)

    def take(self, answers: list) -> Answers:
        return answers[0]

    def grouped(self, group: int) -> InferRequest:
        return self

    def tokens(self, answer) -> tuple[int, int]:
        return 0, 0  # the inner run's engine requests count themselves


class SubRun:
    """Answers ``InferRequest``s by running each as its own run (direct execution, enumeration).

    Stateless: every instance is the same engine (so a replayed nested site asks what it asked)."""

    def __eq__(self, other) -> bool:
        return type(other) is SubRun

    def __hash__(self) -> int:
        return hash(SubRun)

    name = "nested inference"

    def infer(self, requests: Sequence[InferRequest]) -> list[Answers]:
        out = []
        for r in requests:
            source = SeededSource(0 if r.seed is None else r.seed)
            stream = r.algorithm.stream(r.program, [(0, r.problem)], randomness=ChildSource(source, ()))
            out.append(Answers.of(next(iter(stream))[1]))
        return out


class ChildSource:
    """The randomness of a child problem: the parent's source, keyed under ``Stream.NESTED``
    by the outer site (``prefix``) — so the inner run is the same whatever else is in flight.

    Every key an interpreter asks for is ``(stream, problem, …)``; the child's scheduler id
    (``problem``) is dropped, the rest kept: ``parent(NESTED, 0, *prefix, stream, …)`` — a key
    of the same form, with problem 0, so a child of a child maps through its parent alike.
    """

    def __init__(self, parent: Source, prefix: tuple[int, ...]):
        self.parent = parent
        self.prefix = tuple(prefix)

    def _key(self, key: tuple) -> tuple:
        return (int(Stream.NESTED), 0, *self.prefix, key[0], *key[2:])

    def __call__(self, *key: int):
        return self.parent(*self._key(key))

    def engine_seed(self, *key: int) -> int:
        return self.parent.engine_seed(*self._key(key))

    def engine_seeds(self, keys: Sequence[Sequence[int]]) -> list[int]:
        mapped = [self._key(tuple(k)) for k in keys]
        batch = getattr(self.parent, "engine_seeds", None)
        return batch(mapped) if batch is not None else [self.parent.engine_seed(*k) for k in mapped]


def nested(program, args, algorithm) -> Answers:
    """Run ``algorithm`` on ``program(*args)`` inside this program: a random choice whose law
    is the interpreter's output law, drawn exactly (the outer weight is unchanged).

    ``args`` is one problem, as ``ppl.infer`` takes it: a tuple of arguments or a dict of
    keyword arguments. Returns the inner run's ``Answers``.
    """
    program = as_program(program)
    program.bind(args)  # refused here, with the signature, when the inputs do not fit
    if not all(hasattr(algorithm, hook) for hook in ("start", "finish", "stream")):
        raise TypeError(f"nested needs a ppl Algorithm (e.g. ImportanceSampling(8)), got {algorithm!r}")
    request = InferRequest(program, args, algorithm)

    def resolve(results):
        if not results:
            return Need(SubRun(), request)
        return Done(results[0], 0.0)

    args = {"program": program, "problem": args, "algorithm": algorithm}
    return apply_stack(Message("infer", args, resolve))
