"""Exact enumeration: the reference semantics every other interpreter is tested against.

For a finite program (every choice has finite support — tabular LMs, finite NumPyro
distributions, ``select``), list every trace τ with its exact unnormalised target

    γ(τ) = q(τ) · w(τ) = Π_sites p(choice | past) · exp(Σ score) · 1[conditions]

by depth-first re-execution, in float64. Twists are ignored (they never change the
target); a trace whose program raises has γ = 0 and keeps its reason. The result is a
``Posterior`` whose particles are the distinct traces weighted by γ, and whose
``log_evidence`` is log Z exactly.

    >>> import ppl
    >>> from ppl.algorithms import enumerate_program
    >>> from ppl.backends.tabular import TabularLM
    >>> lm = TabularLM.random(["a", "b"], order=2, seed=0)
    >>> @ppl.program
    ... def one_token(lm):
    ...     return ppl.gen(lm, (), max_tokens=1).text
    >>> post = enumerate_program(one_token, (lm,))
    >>> round(sum(post.distribution().values()), 12), round(post.log_evidence, 12)
    (1.0, 0.0)
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import replace

import numpy as np

from ppl.errors import NotEnumerableError
from ppl.handlers import Draw, Message, Messenger, Need, Site, Weigher, answer_directly, only, resolve_site
from ppl.inference import Algorithm, ResultStream
from ppl.interfaces import GenRequest
from ppl.nested import InferRequest
from ppl.posterior import Diagnostics, Posterior, WeightedParticle, logsumexp
from ppl.program import as_program
from ppl.settings import AlgorithmSpec, Setting


class _Dead(BaseException):
    def __init__(self, reason):
        self.reason = reason


class _Enumerate(Messenger):
    """Follows ``path`` through the choice tree, extending it with first branches."""

    def __init__(self, path: list[int]):
        super().__init__()
        self.path = path
        self.widths: list[int] = []
        self.log_q = 0.0
        self.weights = Weigher()
        self.sites: list[Site] = []

    @property
    def log_w(self) -> float:
        """log γ/q of the trace: the program's own factors (twists never count in γ)."""
        return self.weights.total

    def _branch(self, options: list[tuple[object, float]]):
        position = len(self.widths)
        if position == len(self.path):
            self.path.append(0)
        self.widths.append(len(options))
        value, log_probability = options[self.path[position]]
        self.log_q += log_probability
        return value

    def process_message(self, msg: Message) -> None:
        if msg.kind == "barrier":
            self.weights.twist = 0.0  # a twist counts until the next barrier, as in every interpreter
        resolve_site(msg, msg.results, self._answer)

    def _answer(self, step: Need | Draw):
        """Every outcome of a draw or a generation is a branch; other requests are answered
        exactly (they are deterministic)."""
        if isinstance(step, Draw):
            return self._branch(_draw_support(step))
        if isinstance(step.request, InferRequest):
            if not getattr(step.request.algorithm, "exact", False):
                raise NotEnumerableError(
                    f"exact enumeration of a nested run needs an exact inner interpreter (enumerate), "
                    f"not {step.request.algorithm!r}: the inner interpreter's randomness cannot be listed"
                )
            return answer_directly(replace(step, request=replace(step.request, seed=0)), None)
        if isinstance(step.request, GenRequest):
            support = getattr(step.model, "support", None)
            if support is None:
                raise NotEnumerableError(
                    f"model {getattr(step.model, 'name', step.model)!r} cannot list its outputs; "
                    "exact enumeration needs a tabular LM"
                )
            return self._branch(gen_outcomes(step.request, support(step.request)))
        return answer_directly(step, None)

    def postprocess_message(self, msg: Message) -> None:
        self.sites.append(Site(msg.kind, msg.value, msg.log_weight, msg.args))
        reason = self.weights.add(msg, len(self.sites) - 1)
        if reason is not None:
            raise _Dead(reason)


def gen_outcomes(request: GenRequest, support: list) -> list[tuple[object, float]]:
    """Every answer a generation request can get, with its log-probability: each segment of
    the support, or for ``n > 1`` each n-tuple of them, whose log-probability is the sum of
    its segments' (the n samples are independent given the prompt)."""
    segments = [(s, s.logprob) for s in support if s.logprob > -math.inf]
    if request.n == 1:
        return segments
    return [
        (tuple(s for s, _ in combination), float(sum(lp for _, lp in combination)))
        for combination in itertools.product(segments, repeat=request.n)
    ]


def _draw_support(step: Draw) -> list[tuple[object, float]]:
    if step.logits is not None:
        logits = np.asarray(step.logits, dtype=np.float64)
        normaliser = logsumexp(logits)
        return [(i, float(x - normaliser)) for i, x in enumerate(logits) if x > -math.inf]
    distribution = step.distribution
    if not getattr(distribution, "has_enumerate_support", False) or distribution.batch_shape:
        raise NotEnumerableError(
            f"{type(distribution).__name__} has no finite support to enumerate; exact enumeration "
            "needs discrete distributions"
        )
    support = distribution.enumerate_support(expand=False).reshape(-1)
    log_probs = np.asarray(distribution.log_prob(support), dtype=np.float64)
    return [(support[i], float(lp)) for i, lp in enumerate(log_probs) if lp > -math.inf]


def enumerate_program(program, args=(), *, max_traces: int = 200_000) -> Posterior:
    """Every trace of ``program(*args)`` with its exact log γ; log Z as ``log_evidence``."""
    program = as_program(program)
    positional, keywords = program.bind(args)
    started = time.perf_counter()
    particles: list[WeightedParticle] = []
    path: list[int] = []
    while True:
        handler = _Enumerate(path)
        try:
            with only(handler):
                value = program.fn(*positional, **keywords)
        except _Dead as dead:
            particles.append(WeightedParticle(None, -math.inf, handler.sites, "dead", dead.reason))
        except NotEnumerableError:
            raise
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            particles.append(WeightedParticle(None, -math.inf, handler.sites, "dead", reason))
        else:
            particles.append(
                WeightedParticle(value, handler.log_q + handler.log_w, handler.sites, "finished")
            )
        if len(particles) > max_traces:
            raise NotEnumerableError(f"more than {max_traces} traces; the program is too large to enumerate")
        del path[len(handler.widths) :]
        while path and path[-1] + 1 >= handler.widths[len(path) - 1]:
            path.pop()
        if not path:
            break
        path[-1] += 1
    log_z = logsumexp([p.log_weight for p in particles])
    diagnostics = Diagnostics(
        algorithm="enumeration",
        particles=len(particles),
        wall_time=time.perf_counter() - started,
        dead=sum(p.status == "dead" for p in particles),
        deaths=[p.error for p in particles if p.error],
        weights="exact",
    )
    return Posterior(particles, log_z, diagnostics)


ExactPosterior = Posterior


class Enumeration(Algorithm):
    """Exact enumeration as an interpreter: one exact Posterior per problem."""

    name = "enumeration"
    exact = True

    def __init__(self, max_traces: int = 200_000):
        self.max_traces = MAX_TRACES.check(max_traces)

    def schedule(self, problems, max_in_flight, *, trace=False, watch=None):
        """Exact, so the randomness changes nothing; each problem is yielded as it is done.
        Its traces are its particles (one per path): there is no genealogy to keep, and no
        steps or particles to watch (``watch`` is not called)."""

        def exact():
            for index, program, args, kwargs, _, _ in problems:
                yield index, enumerate_program(program, kwargs or args, max_traces=self.max_traces)

        return ResultStream(exact(), None)


MAX_TRACES = Setting("max_traces", int, 200_000, minimum=1)
SPEC = AlgorithmSpec(
    "enumerate", Enumeration, (), budget=None, summary="the exact posterior of a finite program"
)
