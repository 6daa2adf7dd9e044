"""Interpreters over programs: each consumes handlers and the core's scheduler, none
knows a concrete backend.

| interpreter | targets |
|---|---|
| ``ImportanceSampling``, ``SMC``, ``ParticleGibbs``, ``MH`` | the program's distribution π |
| ``Enumeration`` | π exactly (finite programs) |
| ``BeamSearch``, ``DVTS`` | the mode (highest-weight runs); not properly weighted |
"""

from .beam import DVTS, BeamSearch
from .enumeration import Enumeration, ExactPosterior, enumerate_program
from .gibbs import ParticleGibbs
from .importance import ImportanceSampling
from .mh import MH, logprob, power_gen
from .resampling import SCHEMES as RESAMPLING_SCHEMES
from .smc import SMC

__all__ = [
    "DVTS",
    "MH",
    "SMC",
    "BeamSearch",
    "Enumeration",
    "ExactPosterior",
    "ImportanceSampling",
    "ParticleGibbs",
    "RESAMPLING_SCHEMES",
    "enumerate_program",
    "logprob",
    "power_gen",
]
