"""Engines behind the core's interfaces (``ppl.interfaces``): exact tabular LMs for tests,
reward models from Python functions; real engines (vLLM, OpenAI-compatible) as extras."""

from .functions import FunctionReward
from .tabular import TabularLM

__all__ = ["FunctionReward", "TabularLM"]
