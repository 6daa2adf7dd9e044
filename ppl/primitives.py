"""The primitives a program is written with (docs/design.md, "Semantics").

Each primitive builds a ``Message`` and sends it through the handler stack. Choice sites
(``gen``, ``select``, ``sample``, ``reward``, ``tool``; ``ppl.nested`` in ``nested.py``) carry a *resolver*: a pure function from the
answers received so far to what the site still needs (an engine request or a local draw)
or to its value and log importance weight. Because resolvers are pure, any interpreter can
replay, suspend, batch or enumerate a site without knowing what kind of site it is.

Factor sites (``score``, ``twist``, ``condition``, ``observe``) only carry a log weight.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .constraints import Constraint
from .handlers import Done, Draw, Message, Need, apply_stack
from .interfaces import GenRequest, RewardRequest, ScoreBatch, ScoreRequest, Segment, ToolRequest

DEFAULT_MAX_TOKENS = 256


def _token_ids(context, what: str) -> tuple[int, ...]:
    """The context as a tuple of token ids. A tuple whose ends are ints is taken as it is —
    contexts grow by concatenating segments' token ids, and converting every element at
    every site would make a particle's cost quadratic in its length; anything else is
    converted (and refused when it is not token ids)."""
    if type(context) is tuple and (not context or (type(context[0]) is int and type(context[-1]) is int)):
        return context
    if isinstance(context, Segment):
        return context.token_ids
    if isinstance(context, str):
        raise TypeError(
            f"{what}: the context must be token ids, not text; encode it once with "
            "`lm.encode(text)` or `lm.chat(user=...)` and extend it with segments' token_ids"
        )
    try:
        ids = tuple(int(t) for t in context)
    except TypeError:
        raise TypeError(f"{what}: the context must be a sequence of token ids") from None
    return ids


def _log_weight(value, what: str) -> float:
    """A log weight as a float: a real number (or a 0-d array of one), finite or −∞.

    Text and booleans are refused rather than coerced (``score("1.5")`` is a mistake, not 1.5).
    """
    if isinstance(value, (str, bytes, bool, np.bool_)) or str(getattr(value, "dtype", "")) == "bool":
        raise TypeError(f"{what} needs a number (a log weight), got {type(value).__name__}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{what} needs a number (a log weight), got {type(value).__name__}") from None
    if math.isnan(value) or value == math.inf:
        raise ValueError(f"{what} needs a finite log weight or -inf, got {value}")
    return value


def _count(value):
    """An integer given as a numpy integer becomes an int; anything else is checked by the request."""
    return int(value) if isinstance(value, np.integer) else value


def gen(
    lm,
    context: Sequence[int],
    *,
    stop: Sequence[str] | str = (),
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float = 1.0,
    proposal=None,
    n: int | None = None,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    regex: str | None = None,
    grammar: str | None = None,
    json_schema: dict | str | None = None,
    choice: Sequence[str] | None = None,
    where: str | None = None,
) -> Segment | tuple[Segment, ...]:
    """Generate one LM segment after ``context`` (token ids): a random choice.

    Its distribution — and so its factor in the target — is ``lm`` at this temperature,
    stopping at end-of-sequence, at a stop string, or at ``max_tokens`` ("what you write
    is the model"). With ``proposal`` (another LM), the segment is drawn from the proposal
    and weighted by p_lm / p_proposal, which needs one scoring call to ``lm``.

    With ``n`` (a whole number ≥ 1) the site is ``n`` independent segments from one engine
    request (``GenRequest.n``: vLLM's ``SamplingParams(n=...)``), returned as a tuple; its
    factor in the target is the product of the segments' probabilities, and with a proposal
    its weight is the product of their ratios (one scoring call for all of them).

    ``top_k``, ``top_p`` and ``min_p`` truncate every next-token distribution (as vLLM
    does: temperature, min-p, top-k, then top-p; 0, 1, 0 are off): the truncated LM *is*
    this site's distribution, so it is what the target contains.

    A constraint — ``regex``, ``grammar`` (Lark syntax, or GBNF with ``::=``),
    ``json_schema`` (a dict or its JSON text) or ``choice`` (a list of texts), at most one —
    makes the factor ``p(x | context) · 1[x.text ∈ L]``: the LM conditioned on the
    language, not the engine's locally renormalised masked distribution. The segment is
    proposed from the masked distribution and weighted by the probability mass the mask
    allowed at each token (exactly, from the backend's ``Segment.allowed_logmass``, or from
    a scoring call to ``lm`` when the engine cannot report it). A segment that ends (stop
    string, ``max_tokens``) before its text is in L, or after a prefix that no token can
    extend, has weight zero and its particle dies with that reason.
    """
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    many = n is not None
    constraint = Constraint.of(regex=regex, grammar=grammar, json_schema=json_schema, choice=choice)
    request = GenRequest(
        prompt=_token_ids(context, "gen"),
        max_tokens=_count(max_tokens),
        stop=stop,
        temperature=temperature,
        n=_count(n) if many else 1,
        top_k=_count(top_k),
        top_p=top_p,
        min_p=min_p,
        constraint=constraint,
    )

    # a proposal samples its own LM (masked by the constraint), untruncated: the truncated
    # target's support is then always covered
    proposed = request if proposal is None else replace(request, top_k=0, top_p=1.0, min_p=0.0)
    problem = unsupported(proposal if proposal is not None else lm, proposed)
    if problem:
        raise ValueError(problem)

    def resolve(results):
        if not results:
            return Need(proposal if proposal is not None else lm, proposed)
        segments = results[0] if request.n > 1 else (results[0],)
        value = segments if many else segments[0]
        if constraint is not None:
            for s in segments:
                reason = constraint_death(constraint, s)
                if reason is not None:
                    return Done(value, -math.inf, reason)
        if proposal is None:
            if constraint is None:
                return Done(value, 0.0)
            if all(s.allowed_logmass is not None for s in segments):
                return Done(value, float(sum(s.allowed_logmass for s in segments)))
        if len(results) == 1:
            scores = tuple(
                ScoreRequest(request.prompt, s.token_ids, s.eos, request.temperature, **request.sampling())
                for s in segments
            )
            return Need(lm, ScoreBatch(scores) if many else scores[0])
        targets = results[1] if many else (results[1],)
        return Done(value, segments_log_weight(targets, segments))

    args = {"lm": lm, "request": request, "proposal": proposal, "where": where}
    return apply_stack(Message("gen", args, resolve))


def unsupported(model, request: GenRequest) -> str | None:
    """Why ``model`` cannot sample ``request`` as its target says, or None. A backend says
    so itself (``check_request``); one that does not is taken to have neither structured
    outputs nor truncation, and a request that needs them is refused here, not sampled
    from another distribution."""
    check = getattr(model, "check_request", None)
    if callable(check):
        return check(request)
    name = getattr(model, "name", type(model).__name__)
    if request.constraint is not None:
        return (
            f"{name} has no structured outputs, so it cannot sample a constrained segment "
            f"({request.constraint}); use the tabular or vLLM backend, or `condition` after sampling"
        )
    if request.truncated:
        return f"{name} does not sample with top_k / top_p / min_p; leave them at 0 / 1 / 0"
    return None


def constraint_death(constraint: Constraint, segment: Segment) -> str | None:
    """Why a constrained segment has weight zero, or None: the mask let nothing through
    after its text, or it ended (a stop string, ``max_tokens``) before its text was in the
    language. A segment that ended with end-of-sequence was allowed to by the mask."""
    if segment.finish_reason == "constraint" or segment.allowed_logmass == -math.inf:
        return f"gen: the {constraint} admits no next token after {segment.text!r}"
    if segment.finish_reason != "eos" and not constraint.accepts(segment.text):
        why = "max_tokens" if segment.finish_reason == "length" else "a stop string"
        return f"gen: the segment {segment.text!r} ended at {why} before it matched the {constraint}"
    return None


def segments_log_weight(targets: Sequence[float], segments: Sequence[Segment]) -> float:
    """The importance weight of segments drawn from a proposal: Σ_i log p(s_i) − log q(s_i).

    An ``n``-site's segments are independent given the context, so its factor is the product
    over all of them — weighing only one of them would be a different (wrong) target.
    """
    return float(sum(targets) - sum(s.logprob for s in segments))


def select(lm, context: Sequence[int], options: Sequence[str]) -> str:
    """Choose one of ``options`` with probability ∝ p_lm(option | context).

    An exact categorical choice: each option is scored as a continuation (no length
    normalisation), then one is drawn. Its factor in the target is that normalised
    probability, which the draw samples exactly, so the weight is unchanged.
    """
    options = list(options)
    if not options:
        raise ValueError("select needs at least one option")
    prompt = _token_ids(context, "select")

    def resolve(results):
        if not results:
            return Need(lm, ScoreBatch(tuple(ScoreRequest(prompt, tuple(lm.encode(o))) for o in options)))
        if len(results) == 1:
            if not any(math.isfinite(x) for x in results[0]):
                return Done(None, -math.inf)
            return Draw(logits=tuple(results[0]))
        return Done(options[results[1]], 0.0)

    return apply_stack(Message("select", {"lm": lm, "options": options}, resolve))


def sample(distribution) -> Any:
    """A non-LM random choice from a NumPyro distribution; drawn exactly, weight unchanged."""
    if not hasattr(distribution, "log_prob"):
        raise TypeError("sample needs a NumPyro distribution (numpyro.distributions.*)")

    def resolve(results):
        if not results:
            return Draw(distribution=distribution)
        return Done(results[0], 0.0)

    return apply_stack(Message("sample", {"distribution": distribution}, resolve))


# ``where`` (a source position such as "f.tts:5:3", given by the .tts compiler) is put in
# front of the reason a particle dies for when this factor zeroes its weight.


def observe(distribution, value, *, where: str | None = None) -> None:
    """A likelihood term: multiply the target by ``distribution``'s density at ``value``."""
    if not hasattr(distribution, "log_prob"):
        raise TypeError("observe needs a NumPyro distribution (numpyro.distributions.*)")
    log_weight = _log_weight(distribution.log_prob(value), "observe")
    args = {"distribution": distribution, "value": value, "where": where}
    apply_stack(Message("observe", args, log_weight=log_weight))


def score(log_weight: float, *, where: str | None = None) -> None:
    """Multiply the target by exp(log_weight) (Stan's ``target +=``, NumPyro's ``factor``)."""
    apply_stack(Message("score", {"where": where}, log_weight=_log_weight(log_weight, "score")))


def twist(log_weight: float, *, where: str | None = None) -> None:
    """A potential on the current prefix that guides resampling.

    It counts in the weights until the next step barrier, where it is divided back out; a
    particle that finishes has it removed. It changes intermediate targets, never the
    program's target.
    """
    apply_stack(Message("twist", {"where": where}, log_weight=_log_weight(log_weight, "twist")))


def condition(ok: bool, reason: str | None = None, *, where: str | None = None) -> None:
    """A hard constraint: the target is zero where ``ok`` is false."""
    ok = bool(ok)
    args = {"ok": ok, "reason": reason, "where": where}
    apply_stack(Message("condition", args, log_weight=0.0 if ok else -math.inf))


def reward(model, *args) -> float:
    """Ask a reward model, verifier or judge for a number; batched and memoised by the engine.

    The reward is a value, not a weight: use ``score`` or ``twist`` to weight by it.
    """
    request = RewardRequest(tuple(args))

    def resolve(results):
        if not results:
            return Need(model, request)
        return Done(float(results[0]), 0.0)

    return apply_stack(Message("reward", {"model": model, "args": args}, resolve))


def tool(model, *args) -> Any:
    """Call a tool (sandboxed Python, retrieval …): batched and memoised like a reward, and
    counted in the run's statistics. Its answer is a value, not a weight.

    Arguments the tool refuses (its optional ``check``) raise here, so only this particle
    dies, with the tool's reason; a tool never fails the whole run for one call.
    """
    args = tuple(args)
    check = getattr(model, "check", None)
    problem = check(args) if check is not None else None
    if problem:
        raise ValueError(problem)
    request = ToolRequest(args)

    def resolve(results):
        if not results:
            return Need(model, request)
        return Done(results[0], 0.0)

    return apply_stack(Message("tool", {"model": model, "args": args}, resolve))


def barrier(resume: Callable[[], Any] | None = None) -> None:
    """The step barrier: the point between steps where an algorithm may act.

    ``resume``, when the program can offer it, makes the program's state here into a
    ``Continuation`` (called by an interpreter that copies the particle, instead of
    replaying the copy's record); it changes nothing else."""
    apply_stack(Message("barrier", {}, resume=resume))


def steps(max: int, *, start: int = 0, resume: Callable[[int], Any] | None = None) -> Iterator[int]:
    """Iterate over at most ``max`` steps, with a barrier between consecutive steps.

    ``break`` (or ``return``) inside the loop finishes the particle's stepping: it is then
    kept as it is and not extended again.

    For a program that can continue from a barrier (compiled ``.tts``): ``resume(t)`` is
    offered at the barrier before step t (``barrier(resume=...)``), and ``start=t``
    continues the loop at step t just after that barrier, which has been passed already.
    """
    if not isinstance(max, int) or max < 1:
        raise ValueError(f"steps(max=...) needs a positive integer, got {max!r}")
    for t in range(start, max):
        if t > start:
            barrier(None if resume is None else (lambda t=t: resume(t)))
        yield t
