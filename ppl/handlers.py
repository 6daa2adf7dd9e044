"""Effect handlers in the NumPyro style, with the handler stack in a ``ContextVar``.

A primitive (``gen``, ``sample``, ``score`` …) builds a ``Message`` and hands it to
``apply_stack``; every active handler may look at it or answer it, innermost first. A
handler is both a context manager and a decorator. Without any handler a choice site is
executed directly — one sample from the program — which needs a source of randomness::

    >>> import ppl
    >>> from ppl.backends.tabular import TabularLM
    >>> lm = TabularLM.random(["a", "b"], order=2, seed=0)
    >>> @ppl.program
    ... def two_tokens(lm):
    ...     s = ppl.gen(lm, (), max_tokens=2)
    ...     ppl.score(-1.0 * len(s))
    ...     return s.text
    >>> with ppl.seed(rng_seed=0), ppl.trace() as tr:
    ...     text = two_tokens(lm)
    >>> [site.kind for site in tr.sites][:2]
    ['gen', 'score']

Because the stack lives in a ``ContextVar``, threads and asyncio tasks each see their own
handlers; nothing is kept in module globals.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import MissingRandomnessError
from .interfaces import engine_method
from .randomness import Randomness, SeededRandomness, Stream, categorical

_STACK: ContextVar[tuple[Messenger, ...]] = ContextVar("ppl_handler_stack", default=())


# --- what a choice site asks for while it is being resolved -----------------------------


@dataclass(frozen=True)
class Need:
    """The site needs an engine to answer ``request`` (sent to ``model``)."""

    model: Any
    request: Any


@dataclass(frozen=True)
class Draw:
    """The site needs a categorical draw with these logits (or from this distribution)."""

    logits: tuple[float, ...] | None = None
    distribution: Any = None


@dataclass(frozen=True)
class Done:
    """The site is resolved: its value, and its log importance weight (target / proposal);
    ``reason`` says why when that weight is zero (a constrained segment that cannot be
    completed), and is what the particle's death records."""

    value: Any
    log_weight: float = 0.0
    reason: str | None = None


# --- messages and the stack ------------------------------------------------------------------


@dataclass
class Message:
    """One effectful site. ``resolve(results)`` turns the answers so far into Need/Draw/Done."""

    kind: str
    args: dict
    resolve: Callable[[list], Need | Draw | Done] | None = None
    value: Any = None
    log_weight: float = 0.0
    done: bool = False
    results: list = field(default_factory=list)
    rng: Randomness | None = None
    # a barrier may offer how to continue the program from just after it (``ppl.steps``):
    # called, it returns a ``Continuation``; an interpreter that copies particles uses it
    # instead of replaying the copy's record
    resume: Callable[[], Any] | None = None


@dataclass
class Site:
    """A site as a trace records it."""

    kind: str
    value: Any
    log_weight: float
    args: dict


class Messenger:
    """Base handler: a context manager that pushes itself on the stack, and a decorator."""

    def __init__(self, fn: Callable | None = None):
        self.fn = fn
        self._tokens: list = []

    def __enter__(self):
        self._tokens.append(_STACK.set(_STACK.get() + (self,)))
        return self

    def __exit__(self, *exc_info):
        _STACK.reset(self._tokens.pop())
        return False

    def __call__(self, *args, **kwargs):
        if self.fn is None:
            raise TypeError(f"{type(self).__name__} was not given a function to wrap")
        with self:
            return self.fn(*args, **kwargs)

    def process_message(self, msg: Message) -> None:
        """Called innermost-first before the site runs; may answer it (set ``msg.done``)."""

    def postprocess_message(self, msg: Message) -> None:
        """Called outermost-last after the site has a value."""


def apply_stack(msg: Message) -> Any:
    """Send ``msg`` through the active handlers, run it if none answered, return its value."""
    stack = _STACK.get()
    for handler in reversed(stack):
        handler.process_message(msg)
        if msg.done:
            break
    if not msg.done:
        _run_directly(msg)
    for handler in stack:
        handler.postprocess_message(msg)
    return msg.value


def resolve_site(msg: Message, answers: list, answer: Callable[[Need | Draw], Any]) -> None:
    """Resolve a choice site: the one loop every interpreter runs a site through.

    The site's resolver is fed ``answers`` (what it received so far, replayed or new); each
    time it asks for something more — an engine request (``Need``) or a local draw
    (``Draw``) — ``answer`` supplies it (or raises, to suspend the run there). Direct
    execution, the scheduler's replay and exact enumeration differ only in ``answer``.
    """
    if msg.resolve is None:
        msg.done = True
        return
    while True:
        step = msg.resolve(answers)
        if isinstance(step, Done):
            msg.value, msg.log_weight, msg.done = step.value, step.log_weight, True
            if step.reason is not None:
                msg.args["reason"] = step.reason
            return
        if not isinstance(step, (Need, Draw)):
            raise TypeError(f"the resolver of a `{msg.kind}` site returned {step!r}: not Need, Draw or Done")
        answers.append(answer(step))


def _run_directly(msg: Message) -> None:
    """Default semantics of a site: resolve it synchronously, one request at a time."""

    def answer(step: Need | Draw):
        if msg.rng is None:
            raise MissingRandomnessError(
                f"a `{msg.kind}` site needs randomness: run the program under an inference "
                "algorithm, or wrap the call in `with ppl.seed(rng_seed=0):`"
            )
        return answer_directly(step, msg.rng)

    resolve_site(msg, msg.results, answer)


def answer_directly(step: Need | Draw, rng: Randomness | None) -> Any:
    """Answer one Need (its own engine call) or Draw (a local draw)."""
    if isinstance(step, Draw):
        return draw(step, rng)
    request = step.request
    if getattr(request, "seed", 0) is None:  # a generation or a nested run gets its own seed
        request = replace(request, seed=int(rng.uniform() * 2**31))
    return request.take(list(getattr(step.model, engine_method(request))(list(request.parts()))))


class Weigher:
    """The running log weight of one run — the one place weights are summed and zero decided.

    ``total`` is log γ/q so far (scores, conditions, observations, proposal corrections);
    ``twist`` the current step's twist, which the caller clears at each barrier. ``add``
    returns why the run must die, or None: a weight of zero (a failed condition, a score or
    twist of −∞ — a twist of −∞ declares that the prefix has no valid completion, exactly as
    ``condition(False)`` would), or a log weight that overflowed to +∞ or became NaN (scores
    that are each finite but sum past the float range), which no weight can represent.
    """

    def __init__(self):
        self.total = 0.0
        self.twist = 0.0

    def add(self, msg: Message, position: int) -> str | None:
        if msg.kind == "twist":
            self.twist += msg.log_weight
        else:
            self.total += msg.log_weight
        weight = self.total + self.twist
        if weight == -math.inf:
            if msg.kind in ("condition", "gen") and msg.args.get("reason"):
                return f"{_where(msg)}{msg.args['reason']}" if msg.kind == "gen" else msg.args["reason"]
            return f"{_where(msg)}{msg.kind} at site {position} gave weight zero"
        if math.isnan(weight) or weight == math.inf:
            return (
                f"{_where(msg)}the log weight overflowed to {weight} at site {position} ({msg.kind}): "
                "scores summed past the float range"
            )
        return None


def _where(msg: Message) -> str:
    """``"f.tts:5:3: "`` when the site knows its place in a source file (``.tts`` programs)."""
    where = msg.args.get("where")
    return f"{where}: " if where else ""


def draw(step: Draw, rng: Randomness) -> Any:
    """Make a local random draw: categorical by inverse CDF, or from a NumPyro distribution."""
    if step.logits is not None:
        return categorical(rng, step.logits)
    distribution = step.distribution
    if getattr(distribution, "has_enumerate_support", False) and not distribution.batch_shape:
        support = distribution.enumerate_support(expand=False).reshape(-1)
        index = categorical(rng, [float(x) for x in distribution.log_prob(support)])
        return support[index]
    import jax

    key = jax.random.PRNGKey(int(rng.uniform() * 2**31))
    return distribution.sample(key)


# --- handlers ----------------------------------------------------------------------------


class seed(Messenger):
    """Supply randomness to every random site inside: ``with ppl.seed(rng_seed=0): ...``.

    Each site gets its own stream, keyed by the seed and the site's position, so runs are
    reproducible and independent of what other handlers do.
    """

    def __init__(self, fn: Callable | None = None, rng_seed: int = 0):
        super().__init__(fn)
        self.rng_seed = rng_seed
        self._count = 0

    def __enter__(self):
        self._count = 0
        return super().__enter__()

    def process_message(self, msg: Message) -> None:
        if msg.resolve is not None and msg.rng is None:
            msg.rng = SeededRandomness(Stream.SEED_HANDLER, self.rng_seed, self._count)
            self._count += 1


class trace(Messenger):
    """Record every site and the total log weight (scores, conditions, corrections).

    ``trace.log_weight`` is log γ(τ)/q(τ) for the run: the importance weight of one
    direct execution. Twists are recorded as sites but not counted: they never change
    the program's target — except a twist of −∞, which zeroes the run as it does under
    every interpreter. ``trace.death`` says why a run has weight zero (None otherwise).
    """

    def __enter__(self):
        self.sites: list[Site] = []
        self.death: str | None = None
        self._weights = Weigher()
        return super().__enter__()

    def postprocess_message(self, msg: Message) -> None:
        self.sites.append(Site(msg.kind, msg.value, msg.log_weight, msg.args))
        if msg.kind == "barrier":
            self._weights.twist = 0.0
        reason = self._weights.add(msg, len(self.sites) - 1)
        if reason is not None and self.death is None:
            self.death = reason

    @property
    def log_weight(self) -> float:
        return -math.inf if self.death is not None else self._weights.total

    def get_trace(self, *args, **kwargs) -> list[Site]:
        """Run the wrapped function and return its sites."""
        with self:
            self.fn(*args, **kwargs)
        return self.sites


class only:
    """Run a block with exactly these handlers (an interpreter's private stack)."""

    def __init__(self, *handlers: Messenger):
        self.handlers = handlers

    def __enter__(self):
        self._token = _STACK.set(self.handlers)
        return self

    def __exit__(self, *exc_info):
        _STACK.reset(self._token)
        return False
