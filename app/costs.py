"""Cost accounting for run and eval summaries: tokens (prompt, cached prompt, generated),
engine calls, wall time, and an optional money cost from a price table (``--prices FILE``).

Per-problem records carry prompt, generated and streamed requests' cached prompt tokens
(``tokens_cached``: the scheduler counts them per problem). A summary takes the cached share
from the models' own counters over the run (``Usage.cached_prompt_tokens``, counted by the
vLLM and OpenAI-compatible backends), which also see the requests a synchronous call made.

A price table is JSON, in money per million tokens, with optional per-model overrides::

    {"prompt": 0.15, "cached_prompt": 0.075, "generated": 0.60,
     "models": {"smollm2-135m-instruct": {"prompt": 0.01, "generated": 0.02}}}

A cached prompt token is charged ``cached_prompt`` (default: the ``prompt`` price), the
other prompt tokens ``prompt``.

    >>> prices = Prices.parse({"prompt": 1.0, "cached_prompt": 0.5, "generated": 2.0})
    >>> prices.cost(prompt=1_000_000, cached=400_000, generated=500_000)
    1.8
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KINDS = ("prompt", "cached_prompt", "generated")


class PricesError(ValueError):
    """A price table that cannot be read, with the reason."""


@dataclass(frozen=True)
class Price:
    prompt: float = 0.0
    cached_prompt: float | None = None
    generated: float = 0.0

    def cost(self, prompt: int, cached: int, generated: int) -> float:
        cached_price = self.prompt if self.cached_prompt is None else self.cached_prompt
        return ((prompt - cached) * self.prompt + cached * cached_price + generated * self.generated) / 1e6


def _price(table: Mapping, where: str, base: Price | None = None) -> Price:
    unknown = [k for k in table if k not in (*KINDS, "models")]
    if unknown:
        raise PricesError(f"{where}: unknown price '{unknown[0]}'; the prices are {', '.join(KINDS)}")
    values = {}
    for kind in KINDS:
        if kind in table:
            value = table[kind]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise PricesError(
                    f"{where}: {kind} must be a number >= 0 (money per million tokens), got {value!r}"
                )
            values[kind] = float(value)
        elif base is not None:
            values[kind] = getattr(base, kind)
    return Price(**values)


@dataclass(frozen=True)
class Prices:
    default: Price
    models: Mapping[str, Price] = field(default_factory=dict)

    @staticmethod
    def parse(table) -> Prices:
        if not isinstance(table, dict):
            raise PricesError('a price table is a JSON object like {"prompt": 0.15, "generated": 0.6}')
        default = _price(table, "prices")
        models = table.get("models", {})
        if not isinstance(models, dict):
            raise PricesError("prices: models maps model names to their prices")
        return Prices(default, {name: _price(t, f"prices of {name}", default) for name, t in models.items()})

    @staticmethod
    def read(path: Path) -> Prices:
        try:
            return Prices.parse(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as error:
            raise PricesError(f"cannot read the prices {path}: {error}") from None

    def for_model(self, name: str | None) -> Price:
        return self.models.get(name, self.default) if name is not None else self.default

    def cost(self, prompt: int, cached: int, generated: int, model: str | None = None) -> float:
        return self.for_model(model).cost(prompt, cached, generated)


def usage(models: Iterable) -> dict:
    """Each distinct model's counters now: name → (prompt, cached prompt, generated, calls)."""
    out = {}
    for model in {id(m): m for m in models}.values():
        counters = getattr(model, "usage", None)
        if counters is None:
            continue
        name = str(getattr(model, "name", type(model).__name__))
        previous = out.get(name, (0, 0, 0, 0))
        now = (
            counters.prompt_tokens,
            counters.cached_prompt_tokens,
            counters.generated_tokens,
            counters.calls,
        )
        out[name] = tuple(a + b for a, b in zip(previous, now))
    return out


def since(before: dict, after: dict) -> dict:
    """The counters' change per model between two ``usage`` readings."""
    return {
        name: tuple(a - b for a, b in zip(now, before.get(name, (0, 0, 0, 0)))) for name, now in after.items()
    }


def cached_tokens(delta: dict) -> int:
    return sum(counters[1] for counters in delta.values())


def run_cost(records: Iterable[dict], delta: dict, prices: Prices | None) -> float | None:
    """The money cost of a run: its records' prompt and generated tokens, the models' cached share.

    With one model (the usual case) its own price applies; with several, the records cannot say
    which model each token went to, so the default price applies to the records' totals."""
    if prices is None:
        return None
    records = list(records)
    prompt = sum(r.get("tokens_in", 0) for r in records)
    generated = sum(r.get("tokens_out", 0) for r in records)
    cached = min(cached_tokens(delta), prompt)
    model = next(iter(delta)) if len(delta) == 1 else None
    return prices.cost(prompt, cached, generated, model)


def summary_line(
    records: Iterable[dict], delta: dict, wall_time: float, engine_calls: int, prices=None
) -> str:
    """One line of a run's costs: tokens (prompt, cached, generated), engine calls, wall time, cost."""
    records = list(records)
    prompt = sum(r.get("tokens_in", 0) for r in records)
    generated = sum(r.get("tokens_out", 0) for r in records)
    cached = min(cached_tokens(delta), prompt)
    text = (
        f"tokens: {prompt} prompt ({cached} from the prefix cache), {generated} generated; "
        f"{engine_calls} engine calls; {wall_time:.2f} s"
    )
    cost = run_cost(records, delta, prices)
    return text + (f"; cost {cost:.6f}" if cost is not None else "")


@dataclass(frozen=True)
class EngineTimes:
    """A per-token cost model of the engine, fitted from an eval's own timings: seconds per
    uncached prompt token, per generated token and per engine call, by non-negative least
    squares over the (interpreter, budget) rows' totals. Its prediction for a row is the
    *idealised runtime*: what the row's work costs on this engine, free of what else the
    machine was doing while it ran (the approach of "Cheaply evaluating inference efficiency
    metrics": cost from token counts and a fitted hardware model, not from noisy wall time).

    >>> times = EngineTimes.fit([(100, 10, 1, 0.25), (200, 10, 1, 0.35), (100, 30, 2, 0.5)])
    >>> [round(x, 6) for x in (times.prompt, times.generated, times.call)]
    [0.001, 0.01, 0.05]
    """

    prompt: float
    generated: float
    call: float

    @staticmethod
    def fit(samples) -> EngineTimes | None:
        """From ``(uncached prompt tokens, generated tokens, engine calls, seconds)`` per row;
        None with fewer than three rows (three unknowns) or no work to fit."""
        samples = [s for s in samples if s[3] > 0]
        if len(samples) < 3:
            return None
        from scipy.optimize import nnls  # scipy comes with jax

        work = np.array([s[:3] for s in samples], dtype=float)
        seconds = np.array([s[3] for s in samples], dtype=float)
        if not work.any():
            return None
        scale = work.max(axis=0)
        scale[scale == 0] = 1.0  # columns of very different size (tokens against calls)
        coefficients, _ = nnls(work / scale, seconds)
        return EngineTimes(*(float(c) for c in coefficients / scale))

    def seconds(self, prompt: float, generated: float, calls: float) -> float:
        return self.prompt * prompt + self.generated * generated + self.call * calls

    def describe(self) -> str:
        return (
            f"engine cost model (fitted to these rows' wall times): {1e3 * self.prompt:.3f} ms per "
            f"uncached prompt token, {1e3 * self.generated:.3f} ms per generated token, "
            f"{1e3 * self.call:.1f} ms per engine call; `ideal s` is its prediction"
        )
