"""The one table of interpreters both conformance suites run (tests/test_conformance.py on the
tabular backend, tests/engine/test_conformance_engine.py on the default model).

Every entry is built from the registry, ``ppl.algorithms.ALGORITHMS[spec].build(settings)``
— the path ``.tts`` files, ``tts run`` and ``tts eval`` take — with ``.tts`` setting names.
``test_conformance.py`` checks that every interpreter in the registry has an entry here, so
a new interpreter cannot be left out of the conformance suites.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ppl.algorithms import ALGORITHMS, DVTS, MH, SMC, BeamSearch, ImportanceSampling, ParticleGibbs


@dataclass(frozen=True)
class Interpreter:
    """One configured interpreter of the suites.

    ``spec`` is its registry name; ``settings`` configure it on the tabular suite and
    ``engine_settings`` on the engine suite (None: not run on a real model). ``weighted``:
    it returns a properly weighted log Ẑ (otherwise ``log_evidence`` is None). ``bad``:
    constructor keywords that must be refused with a ValueError naming them.
    """

    spec: str
    settings: dict
    engine_settings: dict | None
    weighted: bool
    bad: list[dict] = field(default_factory=list)

    @property
    def algorithm_spec(self):
        return ALGORITHMS[self.spec]

    def build(self, *, engine: bool = False):
        settings = self.engine_settings if engine else self.settings
        if settings is None:
            raise ValueError(f"{self.spec} is not run on the engine tier")
        return self.algorithm_spec.build(settings)


INTERPRETERS = {
    "importance": Interpreter("importance", {"particles": 4}, {"particles": 3}, True, [dict(particles=0)]),
    "smc": Interpreter(
        "smc",
        {"particles": 4, "resample": "systematic"},
        {"particles": 3, "ess": 1.0},
        True,
        [dict(particles=-1), dict(particles=2, resample="wild"), dict(particles=2, ess_threshold=2)],
    ),
    "adaptive": Interpreter(
        "adaptive",
        {"particles": 6, "wave": 2, "threshold": 0.8},
        {"particles": 4, "wave": 2},
        False,
        [
            dict(particles=0),
            dict(particles=4, wave=0),
            dict(particles=4, threshold=2),
            dict(particles=4, rule="mode"),
        ],
    ),
    "restarts": Interpreter(
        "restarts",
        {"particles": 3, "attempts": 3, "threshold": 0.5},
        {"particles": 3, "attempts": 2},
        True,
        [dict(particles=0), dict(particles=2, attempts=0), dict(particles=2, threshold=float("nan"))],
    ),
    "enumeration": Interpreter("enumerate", {}, None, True),  # the engine suite checks it refuses
    "beam": Interpreter(
        "beam", {"beams": 2, "expand": 2}, {"beams": 2, "expand": 2}, False, [dict(beams=0), dict(expand=1.5)]
    ),
    "dvts": Interpreter(
        "dvts",
        {"subtrees": 2, "expand": 2},
        {"subtrees": 2, "expand": 2},
        False,
        [dict(subtrees=0), dict(expand=True)],
    ),
    "particle_gibbs": Interpreter(
        "particle_gibbs",
        {"particles": 3, "sweeps": 2},
        {"particles": 2, "sweeps": 2},
        True,
        [dict(particles=1), dict(sweeps=0), dict(particles=2, sweeps=2, burn=5), dict(rejuvenate=-1)],
    ),
    "mh_suffix": Interpreter(
        "mh",
        {"chains": 3, "steps": 3},
        {"chains": 2, "steps": 2},
        False,
        [dict(chains=0), dict(steps=0), dict(proposal="gibbs"), dict(steps=2, burn=2)],
    ),
    "mh_independent": Interpreter(
        "mh",
        {"chains": 3, "steps": 3, "proposal": "independent"},
        {"chains": 2, "steps": 2, "proposal": "independent"},
        False,
        [dict(burn=-1)],
    ),
}
NAMES = sorted(INTERPRETERS)
ENGINE_NAMES = sorted(name for name, entry in INTERPRETERS.items() if entry.engine_settings is not None)

# One small instance of each way an interpreter moves particles — independent runs,
# resampling at every barrier and by ESS, sweeps with a reference, chains, beams, subtrees —
# for runtime tests that must hold under all of them (tests/test_runtime.py,
# tests/test_continuations.py).
SMALL = [
    ImportanceSampling(6),
    SMC(6, ess_threshold=1.0),
    SMC(6, resample="systematic"),
    ParticleGibbs(3, sweeps=2, rejuvenate=1),
    MH(chains=3, steps=3),
    BeamSearch(beams=2, expand=2),
    DVTS(subtrees=2, expand=2),
]
