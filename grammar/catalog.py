"""What a ``.tts`` file may name that the grammar does not define: interpreters, backends, PRM
aggregations, verifiers.

The grammar parses, checks and compiles; it does not know which interpreters or engines
exist. The caller (the application, ``ppl.app.loading``) builds a ``Catalog`` from the
interpreter registry and the model registry and passes it to ``check``, so the checker
reports an unknown algorithm, setting, backend or aggregation without importing any of
them.

    >>> from ppl.settings import AlgorithmSpec, Setting
    >>> spec = AlgorithmSpec("greedy", dict, (Setting("width", int, 2, minimum=1),), budget="width")
    >>> catalog = Catalog({"greedy": spec}, frozenset({"tabular"}), ("prod",))
    >>> catalog.algorithm_names()
    'greedy'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ppl.settings import AlgorithmSpec


@dataclass(frozen=True)
class Catalog:
    """The interpreters (name → spec), backend names and PRM aggregations a file may use."""

    algorithms: Mapping[str, AlgorithmSpec]
    backends: frozenset[str] = field(default_factory=frozenset)
    prm_aggregations: tuple[str, ...] = ()
    verifiers: tuple[str, ...] = ()  # the checkers ``use v = verifier("name")`` may name

    def __post_init__(self) -> None:
        object.__setattr__(self, "algorithms", MappingProxyType(dict(self.algorithms)))
        object.__setattr__(self, "backends", frozenset(self.backends))
        object.__setattr__(self, "prm_aggregations", tuple(self.prm_aggregations))
        object.__setattr__(self, "verifiers", tuple(self.verifiers))

    def algorithm_names(self) -> str:
        return ", ".join(sorted(self.algorithms))

    def backend_names(self) -> str:
        return ", ".join(sorted(self.backends))
