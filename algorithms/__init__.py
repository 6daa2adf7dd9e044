"""Interpreters over programs: each consumes handlers and the core's scheduler, none
knows a concrete backend."""

from .enumeration import Enumeration, ExactPosterior, enumerate_program
from .importance import ImportanceSampling
from .resampling import SCHEMES as RESAMPLING_SCHEMES
from .smc import SMC

__all__ = [
    "SMC",
    "Enumeration",
    "ExactPosterior",
    "ImportanceSampling",
    "RESAMPLING_SCHEMES",
    "enumerate_program",
]
