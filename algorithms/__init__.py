"""Interpreters over programs: each consumes handlers and the core's scheduler, none
knows a concrete backend.

| interpreter | targets |
|---|---|
| ``ImportanceSampling``, ``SMC``, ``ParticleGibbs``, ``MH`` | the program's distribution π |
| ``Enumeration`` | π exactly (finite programs) |
| ``AdaptiveConsistency`` | the law of the stopped majority vote (self-consistency in waves until a Beta posterior settles it) |
| ``Restarts`` | π (pruning with restarts: rejection control on the twisted weights, properly weighted survivors, unbiased Ẑ) |
| ``BeamSearch``, ``DVTS`` | the highest-weight runs found (weight plus twist); not properly weighted, not the mode of π |

``ALGORITHMS`` is the one registry of interpreters: name → ``ppl.settings.AlgorithmSpec``
(its settings with defaults and validation, its budget setting, its builder). The ``.tts``
checker, ``tts run`` and ``tts eval`` read it; adding an interpreter is writing its module
and adding its spec below.
"""

from ppl.settings import registry

from . import adaptive, beam, enumeration, gibbs, importance, mh, restarts, smc
from .adaptive import AdaptiveConsistency
from .beam import DVTS, BeamSearch
from .enumeration import Enumeration, ExactPosterior, enumerate_program
from .gibbs import ParticleGibbs
from .importance import ImportanceSampling
from .mh import MH, logprob, power_gen
from .resampling import SCHEMES as RESAMPLING_SCHEMES
from .restarts import Restarts
from .smc import SMC

ALGORITHMS = registry(
    importance.SPEC,
    adaptive.SPEC,
    smc.SPEC,
    enumeration.SPEC,
    beam.BEAM_SPEC,
    beam.DVTS_SPEC,
    gibbs.SPEC,
    mh.SPEC,
    restarts.SPEC,
    aliases={"best_of_n": "importance"},
)

__all__ = [
    "ALGORITHMS",
    "AdaptiveConsistency",
    "DVTS",
    "MH",
    "SMC",
    "BeamSearch",
    "Enumeration",
    "ExactPosterior",
    "ImportanceSampling",
    "ParticleGibbs",
    "RESAMPLING_SCHEMES",
    "Restarts",
    "enumerate_program",
    "logprob",
    "power_gen",
]
