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
from .interfaces import GenRequest, ScoreRequest
from .randomness import Randomness, SeededRandomness, categorical

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
    """The site is resolved: its value, and its log importance weight (target / proposal)."""

    value: Any
    log_weight: float = 0.0


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


def _run_directly(msg: Message) -> None:
    """Default semantics of a site: resolve it synchronously, one request at a time."""
    if msg.resolve is None:
        msg.done = True
        return
    while True:
        step = msg.resolve(msg.results)
        if isinstance(step, Done):
            msg.value, msg.log_weight, msg.done = step.value, step.log_weight, True
            return
        if msg.rng is None:
            raise MissingRandomnessError(
                f"a `{msg.kind}` site needs randomness: run the program under an inference "
                "algorithm, or wrap the call in `with ppl.seed(rng_seed=0):`"
            )
        msg.results.append(answer_directly(step, msg.rng))


def answer_directly(step: Need | Draw, rng: Randomness) -> Any:
    """Answer one Need (a single-request engine call) or Draw (a local draw)."""
    if isinstance(step, Draw):
        return draw(step, rng)
    request = step.request
    if isinstance(request, tuple):
        return step.model.logprob(list(request))
    if isinstance(request, GenRequest):
        if request.seed is None:
            request = replace(request, seed=int(rng.uniform() * 2**31))
        return step.model.generate([request])[0][0]
    if isinstance(request, ScoreRequest):
        return step.model.logprob([request])[0]
    return step.model.reward([request])[0]


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
            msg.rng = SeededRandomness(self.rng_seed, self._count)
            self._count += 1


class trace(Messenger):
    """Record every site and the total log weight (scores, conditions, corrections).

    ``trace.log_weight`` is log γ(τ)/q(τ) for the run: the importance weight of one
    direct execution. Twists are recorded as sites but not counted: they never change
    the program's target.
    """

    def __enter__(self):
        self.sites: list[Site] = []
        return super().__enter__()

    def postprocess_message(self, msg: Message) -> None:
        self.sites.append(Site(msg.kind, msg.value, msg.log_weight, msg.args))

    @property
    def log_weight(self) -> float:
        total = 0.0
        for site in self.sites:
            if site.kind != "twist":
                total += site.log_weight
        return total if not math.isnan(total) else -math.inf

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
