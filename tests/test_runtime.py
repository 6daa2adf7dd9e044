"""The open, streaming runtime (docs/design.md §3) on the exact tabular LM.

- Streaming changes nothing: the same seeded results whether the engine answers each round
  at once (tabular) or request by request in the order sequences finish (``Stepwise``),
  under every interpreter (invariant 15).
- A problem submitted mid-run gets the result it gets in a fresh run with the same seed.
- A dataset larger than the in-flight limit completes, never holding more than the limit.
- An engine that fails mid-stream raises ``EngineError`` keeping every finished problem.
- A particle's cost is linear in its sites: moving one site on does not re-run the others.
"""

from __future__ import annotations

import gc

import pytest
from interpreters import SMALL

import ppl
from ppl.algorithms import SMC, ImportanceSampling
from ppl.backends import TabularLM
from ppl.backends.stepwise import Stepwise
from ppl.randomness import SeededSource
from ppl.scheduler import Scheduler


@ppl.program
def ragged(lm, start):
    """Segments of 1–3 tokens (EOS or a stop string ends them early): sequences finish out of order."""
    ctx = lm.encode(start)
    for _ in ppl.steps(max=4):
        s = ppl.gen(lm, ctx, max_tokens=3, stop=["c"])
        ctx += s.token_ids
        ppl.twist(0.3 * lm.decode(ctx).count("a"))
        if s.eos:
            break
    ppl.score(0.5 * lm.decode(ctx).count("b"))
    return lm.decode(ctx)


def make_lm() -> TabularLM:
    return TabularLM.random(["a", "b", "c"], order=2, seed=11)


def outcome(results):
    return [(p.values, [round(w, 12) for w in p.log_weights], p.diagnostics.deaths) for p in results]


@pytest.mark.parametrize("algorithm", SMALL, ids=repr)
def test_streaming_changes_no_seeded_result(algorithm):
    lm = make_lm()
    problems = [(lm, s) for s in ["a", "b", "ab", "ba", "c"]]
    batched = algorithm.run(ragged, problems, seed=5)
    stream_lm = Stepwise(make_lm(), max_num_seqs=7)
    streamed = algorithm.run(ragged, [(stream_lm, s) for s in ["a", "b", "ab", "ba", "c"]], seed=5)
    assert outcome(streamed) == outcome(batched)
    assert stream_lm.steps > 0 and max(stream_lm.occupancy) <= 7


def test_the_streaming_engine_answers_short_sequences_first():
    lm = Stepwise(make_lm())
    results = SMC(8).run(ragged, [(lm, "a"), (lm, "b")], seed=0)
    assert len(set(lm.occupancy)) > 1  # the batch shrinks and grows as sequences finish and join
    assert results.stats.occupancy and max(n for _, n in results.stats.occupancy) <= 16


def test_a_problem_submitted_mid_run_gets_its_fresh_result():
    lm, algorithm, source = make_lm(), SMC(6, ess_threshold=1.0), SeededSource(3)
    scheduler = Scheduler()
    for index, start in enumerate(["a", "b", "ab"]):
        scheduler.submit(index, ragged, (lm, start), {}, algorithm, source)
    late = {}
    for index, posterior in scheduler.results():
        if index == 0:
            scheduler.submit(7, ragged, (lm, "ba"), {}, algorithm, source)
        late[index] = posterior
    assert sorted(late) == [0, 1, 2, 7]
    fresh = algorithm.run(ragged, [(lm, "ba")], seed=3, ids=[7])[0]
    assert outcome([late[7]]) == outcome([fresh])
    with pytest.raises(ValueError, match="already submitted"):
        scheduler.submit(7, ragged, (lm, "ba"), {}, algorithm, source)


def test_a_dataset_larger_than_the_limit_streams_through_within_it():
    lm = make_lm()
    problems = [(lm, "ab"[i % 2] * (1 + i % 3)) for i in range(30)]
    unbounded = SMC(8).run(ragged, problems, seed=1)
    bounded = SMC(8).run(ragged, problems, seed=1, max_in_flight=16)
    assert outcome(bounded) == outcome(unbounded)
    assert bounded.stats.peak_in_flight <= 16
    assert unbounded.stats.peak_in_flight == 8 * 30
    # the stream reads problems only when there is room
    read = []

    def dataset():
        for i, problem in enumerate(problems):
            read.append(i)
            yield i, problem

    stream = SMC(8).stream(ragged, dataset(), seed=1, max_in_flight=16)
    first, _ = next(stream)
    assert first in (0, 1) and len(read) <= 4
    assert len(list(stream)) == 29


def test_an_invalid_limit_is_refused():
    with pytest.raises(ValueError, match="max_in_flight must be an integer >= 1"):
        SMC(2).run(ragged, [(make_lm(), "a")], max_in_flight=0)


class FailingLM(TabularLM):
    """A real tabular LM whose engine fails on its ``fail_at``-th generate call."""

    fail_at = 6

    def generate(self, requests):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == self.fail_at:
            raise RuntimeError("the engine process died")
        return super().generate(requests)


def test_an_engine_that_fails_mid_stream_keeps_every_finished_problem():
    base = make_lm()
    lm = FailingLM(base.vocab, base._table, order=base.order, name="failing")
    stream_lm = Stepwise(lm, max_num_seqs=2)
    problems = [(stream_lm, s) for s in ["a", "b", "ab", "ba", "c", "cc"]]
    with pytest.raises(ppl.EngineError, match="the engine process died") as caught:
        SMC(2).run(ragged, problems, seed=0, max_in_flight=2)
    completed = caught.value.completed
    assert completed, "problems finished before the failure are kept"
    reference = SMC(2).run(ragged, [(make_lm(), s) for s in ["a", "b", "ab", "ba", "c", "cc"]], seed=0)
    for index, posterior in completed.items():
        assert outcome([posterior]) == outcome([reference[index]])


def test_a_particle_runs_each_site_once():
    """No replay when nothing is copied: T steps execute T gen sites, not T(T+1)/2."""
    executed = []

    @ppl.program
    def counted(lm):
        ctx = ()
        for t in ppl.steps(max=12):
            executed.append(t)
            s = ppl.gen(lm, ctx, max_tokens=1)
            ctx += s.token_ids
        return len(ctx)

    lm = TabularLM.bigram({"<s>": {"a": 1}, "a": {"a": 1}})
    ImportanceSampling(3).run(counted, [(lm,)], seed=0)
    assert len(executed) == 3 * 12


def test_copies_at_resampling_replay_only_the_extra_copies():
    """Under SMC with resampling at every barrier, each parent's execution goes on in one
    of its copies; only the others replay: fewer executions than N·T(T+1)/2."""
    executed = []

    @ppl.program
    def counted(lm):
        ctx = ()
        for t in ppl.steps(max=10):
            executed.append(t)
            s = ppl.gen(lm, ctx, max_tokens=1)
            ctx += s.token_ids
            ppl.twist(1.0 if s.text == "a" else 0.0)
        return lm.decode(ctx)

    lm = TabularLM.bigram({"<s>": {"a": 1, "b": 1}, "a": {"a": 1, "b": 1}, "b": {"a": 1, "b": 1}})
    post = SMC(8, ess_threshold=1.0, resample="systematic").run(counted, [(lm,)], seed=0)[0]
    assert post.diagnostics.resampling_events == 9
    assert 8 * 10 <= len(executed) < 8 * 10 * 11 // 2 / 2


REPLAY_DIFFERS = (
    "the program differs on replay: random choice {n} (gen) asked for something else than when it "
    "first ran (a program must be deterministic given what its sites return: no Python random, "
    "clocks or outside state)"
)


def test_a_program_that_differs_on_replay_kills_the_copies_that_diverge():
    """Copies made at resampling replay their parent's record; a program using Python's
    ``random`` asks other questions on replay, and such a copy dies with that reason."""
    import random

    lm = TabularLM.bigram({"<s>": {" a": 1, " b": 1}, " a": {" a": 1, " b": 1}, " b": {" a": 1, " b": 1}})
    coin = random.Random(0)  # outside state the record does not hold

    @ppl.program
    def flaky(lm, rng):
        ctx = ()
        for _ in ppl.steps(max=4):
            ctx += ppl.gen(lm, ctx, max_tokens=rng.choice([1, 2])).token_ids
            ppl.twist(ctx.count(0) * 0.5)
        return lm.decode(ctx)

    post = ppl.infer(flaky, [(lm, coin)], SMC(particles=8, ess_threshold=1.0), seed=0)[0]
    reasons = set(post.diagnostics.deaths)
    assert reasons and reasons <= {REPLAY_DIFFERS.format(n=n) for n in (1, 2, 3)}

    # the same program with the choice fixed replays exactly: nobody dies, and it did resample
    class Fixed:
        @staticmethod
        def choice(options):
            return options[0]

    fixed = ppl.infer(flaky, [(lm, Fixed())], SMC(particles=8, ess_threshold=1.0), seed=0)[0]
    assert fixed.diagnostics.deaths == [] and all(fixed.diagnostics.resampled)


def test_the_scheduler_reports_where_a_run_stands_for_a_live_display():
    """``watch`` gets RunProgress snapshots: the step and the tokens grow, live particles and
    ESS are those of the problems in flight, and streamed requests show as waiting."""
    lm, algorithm, source = Stepwise(make_lm()), SMC(6, ess_threshold=1.0), SeededSource(3)
    seen = []
    scheduler = Scheduler(watch=seen.append, watch_every=0.0, max_particles=12)
    for index, start in enumerate(["a", "b", "ab"]):
        scheduler.submit(index, ragged, (lm, start), {}, algorithm, source)
    results = dict(scheduler.results())
    assert len(seen) == scheduler.stats.rounds - 1 + 3  # every round but the last, and each of 3 ends
    assert seen[0].steps == 0 and max(s.steps for s in seen) >= 2
    assert all(a.tokens_out <= b.tokens_out and a.elapsed <= b.elapsed for a, b in zip(seen, seen[1:]))
    assert (
        seen[-1].tokens_out
        <= scheduler.stats.tokens_out
        == sum(p.diagnostics.tokens_out for p in results.values())
    )
    assert max(s.particles for s in seen) == 12 and max(s.active for s in seen) == 2  # within the limit
    assert seen[0].queued == 1 and seen[-1].queued == 0 and seen[-1].done >= 1
    assert max(s.waiting for s in seen) > 0  # Stepwise streams: requests wait in the engine
    assert all(s.live <= s.particles for s in seen)
    assert any(s.ess is not None and 0 < s.ess <= 6 for s in seen)


def test_the_collector_is_paused_inside_a_round_and_restored_after():
    """Programs run with Python's cyclic collector off (it was half of the scheduler's own
    time); what the caller had is restored, between rounds as at the end, on or off."""
    seen = []

    @ppl.program
    def looks(lm):
        ctx = ()
        for _ in ppl.steps(max=3):
            seen.append(gc.isenabled())
            ctx += ppl.gen(lm, ctx, max_tokens=1).token_ids
        return len(ctx)

    lm = make_lm()
    assert gc.isenabled()
    finished = []
    scheduler = Scheduler()
    for i in range(3):
        scheduler.submit(i, looks, (lm,), {}, SMC(4, ess_threshold=1.0), SeededSource(i))
    for index, _ in scheduler.results():
        finished.append((index, gc.isenabled()))  # a finished problem is handed out between rounds
    assert seen and not any(seen)
    assert sorted(finished) == [(0, True), (1, True), (2, True)]
    gc.disable()
    try:
        SMC(4).run(looks, [(lm,)], seed=0)
        assert not gc.isenabled()  # a caller's choice is kept
    finally:
        gc.enable()


def test_an_execution_no_copy_takes_is_closed_at_once(monkeypatch):
    """Resampling discards particles; their suspended programs end at once (their frames
    freed without the cyclic collector, which is off here), and copies are unaffected."""
    import weakref

    from ppl import scheduler as module

    executions = []
    original = module.Execution.__init__

    def tracked(self, *args, **kwargs):
        original(self, *args, **kwargs)
        executions.append(weakref.ref(self))

    monkeypatch.setattr(module.Execution, "__init__", tracked)
    lm = make_lm()
    gc.collect()
    gc.disable()
    try:
        results = SMC(8, ess_threshold=1.0).run(ragged, [(lm, "a"), (lm, "b")], seed=3)
        alive = [ref for ref in executions if ref() is not None]
    finally:
        gc.enable()
    assert len(executions) > 16  # copies were made
    assert alive == []
    monkeypatch.setattr(module.Execution, "__init__", original)
    assert outcome(results) == outcome(SMC(8, ess_threshold=1.0).run(ragged, [(lm, "a"), (lm, "b")], seed=3))
