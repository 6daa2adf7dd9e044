"""vLLM's engine process killed in the middle of a streaming run.

A run streams problems through the engine; the engine-core process is killed (SIGKILL, as
the kernel's OOM killer would) once the first problem has been delivered. The run must stop
with an ``EngineError`` that names the cause and keeps every problem that had finished; it
must not hang. The test starts its own engine, so the shared ``default_lm`` is unaffected.
"""

from __future__ import annotations

import os
import signal

import pytest

import ppl
from ppl.algorithms import ImportanceSampling
from ppl.backends.vllm import VLLM


@ppl.program
def steps_of(lm, steps: int):
    """``steps`` segments of 24 tokens: a problem's length is its argument."""
    ctx = lm.chat(user="Count slowly from one to one hundred, one number per line.")
    for _ in ppl.steps(max=steps):
        s = ppl.gen(lm, ctx, max_tokens=24, temperature=0.8)
        ctx += s.token_ids
    return len(ctx)


def engine_core_pids(lm: VLLM) -> list[int]:
    manager = lm.engine.llm_engine.engine_core.resources.engine_manager
    return [process.pid for process in manager.processes]


@pytest.fixture
def doomed_lm():
    lm = VLLM(name="doomed")
    yield lm
    lm.close()


def test_a_killed_engine_raises_engine_error_and_keeps_every_finished_problem(doomed_lm):
    pids = engine_core_pids(doomed_lm)
    assert pids, "the offline engine runs its core in a child process"
    problems = [(0, (doomed_lm, 1)), (1, (doomed_lm, 1))] + [(i, (doomed_lm, 40)) for i in range(2, 6)]
    stream = ImportanceSampling(2).stream(steps_of, iter(problems), seed=0, max_in_flight=12)
    delivered = {}
    with pytest.raises(ppl.EngineError) as caught:
        for index, posterior in stream:
            delivered[index] = posterior
            if len(delivered) == 1:
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
    error = caught.value
    assert "doomed.poll failed" in str(error) and "the vLLM engine process exited (exit code -9)" in str(
        error
    )
    assert error.backend == "doomed"
    assert set(delivered) <= set(error.completed), "every delivered problem is in the error"
    assert set(error.completed) & {0, 1} and not set(error.completed) & {2, 3, 4, 5}
    for posterior in error.completed.values():
        assert posterior.best() is not None and len(posterior.particles) == 2
