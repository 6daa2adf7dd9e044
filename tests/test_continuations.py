"""Compiled .tts programs go on from their barriers: copies do not replay (docs/design.md §3).

A copy made at resampling starts from its parent's continuation — the program's variables
and where it stands in its ``if`` / ``for`` / ``step`` statements — instead of re-running
the program over its record. That must change nothing: under every interpreter, on
programs with steps inside loops, branches and other steps, with ``finish``, ``return``
and deaths inside steps, results are identical (values, weights, statuses, every site,
ESS and resampling decisions) to the same program replayed. A mutant continuation that
loses the weight so far, or the barrier's site, is caught by the same comparison.
"""

from __future__ import annotations

import pytest
from interpreters import SMALL

from ppl.algorithms import SMC
from ppl.app import load
from ppl.randomness import SeededSource
from ppl.scheduler import Resume, Scheduler

HEADER = 'version 0.1\nuse lm = model("tiny")\n'

PROGRAMS = {
    # steps inside a for loop inside an if: the cursor holds three frames
    "nested": """
program f(n: number) -> text {
  let out: list[segment] = []
  for k in [1, 2] {
    if n > 0 {
      step (max 3) {
        s ~ lm.gen(lm.encode("a") + out, max_tokens = 2)
        out += [s]
        twist 0.2 * len(text(out)) * k
      }
    } else {
      b ~ lm.gen(lm.encode("b"), max_tokens = 1)
      out += [b]
    }
  }
  score 0.1 * len(text(out))
  return text(out)
}
""",
    # a step block inside a step block, finish and an early return inside steps
    "inner_steps": """
program f(n: number) -> text {
  let out: list[segment] = []
  step (max 3) {
    s ~ lm.gen(lm.encode("c") + out, max_tokens = 2)
    out += [s]
    step (max 2) {
      t ~ lm.gen(lm.encode("d") + out, max_tokens = 1)
      out += [t]
      twist 0.3 * len(text(out))
      if contains(t, "e") { finish }
    }
    if len(text(out)) > 9 { return text(out) }
  }
  return text(out)
}
""",
    # deaths inside steps (a condition), and a step whose limit is a variable
    "conditions": """
program f(n: number) -> text {
  let out: list[segment] = []
  let limit = n + 2
  step (max limit) {
    s ~ lm.gen(lm.encode("a") + out, max_tokens = 2)
    out += [s]
    condition not contains(s, "Z")
    twist 0.5 * len(text(out))
  }
  return text(out)
}
""",
    # the steps are in a called program: no continuation, replayed as before
    "called": """
program inner(n: number) -> text {
  let out: list[segment] = []
  step (max 3) {
    s ~ lm.gen(lm.encode("a") + out, max_tokens = 2)
    out += [s]
    twist 0.2 * len(text(out))
  }
  return text(out)
}
program f(n: number) -> text {
  let got = inner(n)
  return got
}
""",
}


def compiled(name: str):
    return load(HEADER + PROGRAMS[name], filename=f"{name}.tts").programs["f"]


def run(program, algorithm, *, resumable: bool):
    """Three problems through one scheduler; with ``resumable=False`` copies replay."""
    if not resumable:
        program.resumable = None
    scheduler = Scheduler()
    for i, n in enumerate([1, 0, 2]):
        scheduler.submit(i, program, (n,), {}, algorithm, SeededSource(17 + i))
    return scheduler.run(), scheduler.stats


def outcome(results: dict) -> list:
    out = []
    for index in sorted(results):
        posterior = results[index]
        out.append(
            (
                posterior.log_evidence,
                posterior.diagnostics.ess,
                posterior.diagnostics.resampled,
                [
                    (p.value, p.log_weight, p.status, [(s.kind, s.value, s.log_weight) for s in p.trace])
                    for p in posterior.particles
                ],
            )
        )
    return out


@pytest.mark.parametrize("algorithm", SMALL, ids=repr)
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_going_on_from_a_continuation_equals_replaying(name, algorithm):
    continued, continued_stats = run(compiled(name), algorithm, resumable=True)
    replayed, replayed_stats = run(compiled(name), algorithm, resumable=False)
    assert outcome(continued) == outcome(replayed)
    assert replayed_stats.continued == 0
    if name == "called":
        assert continued_stats.continued == 0  # a called program's steps offer no continuation
    if isinstance(algorithm, SMC) and algorithm.ess_threshold >= 1 and name != "called":
        # every copy made at resampling went on from its parent's state: none replayed
        assert continued_stats.continued > 0 and continued_stats.replayed == 0
        assert continued_stats.continued == replayed_stats.replayed


def test_a_program_called_directly_offers_no_continuation():
    """Only ``Program.resumable`` keeps a cursor: a continuation returns the *outermost*
    program's value, so a .tts program called from Python (or another program) offers none."""
    program = compiled("nested")
    assert program.resumable is not None and program.fn is not program.resumable


@pytest.mark.parametrize(
    "mutant",
    [
        lambda self, c: (setattr(self, "choice_index", c.choices), setattr(self, "barriers", c.barriers)),
        lambda self, c: (
            setattr(self, "choice_index", c.choices),
            setattr(self, "barriers", c.barriers),
            setattr(self.weights, "total", c.total),
        ),
    ],
    ids=["weight lost", "barrier site lost"],
)
def test_a_continuation_that_loses_state_is_caught(monkeypatch, mutant):
    """The comparison above has teeth: a continuation that forgets the weight so far, or
    the barrier's site in the trace, gives a different outcome."""
    algorithm = SMC(6, ess_threshold=1.0)
    replayed, _ = run(compiled("nested"), algorithm, resumable=False)
    monkeypatch.setattr(Resume, "go_on_from", mutant)
    continued, stats = run(compiled("nested"), algorithm, resumable=True)
    assert stats.continued > 0
    assert outcome(continued) != outcome(replayed)
