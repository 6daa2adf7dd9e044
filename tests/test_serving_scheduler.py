"""The scheduler as a server runs it (docs/design.md §3, "Open"): problems submitted from other
threads while ``serve()`` runs, cancelled mid-run, and closed by draining or cancelling.

- Problems submitted concurrently from several threads each get their fresh result.
- A cancelled problem is delivered once as ``Cancelled``; its streamed engine requests are
  withdrawn (the engine has none of them left) and the other problems' results are untouched.
- ``close()`` drains; ``close(cancel=True)`` cancels what is pending, and serve() ends.
- ``AsProblem`` gives a problem run under any id the randomness of problem 0.
"""

from __future__ import annotations

import threading

import pytest
from test_runtime import make_lm, outcome, ragged

from ppl.algorithms import SMC
from ppl.backends import TabularLM
from ppl.backends.stepwise import Stepwise
from ppl.randomness import AsProblem, SeededSource
from ppl.scheduler import Cancelled, Scheduler


def serve_in_thread(scheduler: Scheduler, on_round=None):
    delivered: dict[int, object] = {}
    thread = threading.Thread(target=lambda: delivered.update(scheduler.serve(on_round)), daemon=True)
    thread.start()
    return thread, delivered


STARTS = ["a", "b", "ab", "ba", "c", "cb", "bb", "aa"]


def test_problems_submitted_from_many_threads_while_serving_get_their_fresh_results():
    lm, algorithm, source = make_lm(), SMC(4, ess_threshold=1.0), SeededSource(2)
    scheduler = Scheduler(max_particles=12)
    thread, delivered = serve_in_thread(scheduler)

    def client(offset: int):
        for i in range(offset, 24, 4):
            scheduler.submit(i, ragged, (lm, STARTS[i % len(STARTS)]), {}, algorithm, source)

    clients = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    scheduler.close()  # drain: serve() ends once all 24 are done
    thread.join(timeout=60)
    assert not thread.is_alive()
    fresh = algorithm.run(ragged, [(lm, STARTS[i % len(STARTS)]) for i in range(24)], seed=2)
    assert sorted(delivered) == list(range(24))
    assert outcome([delivered[i] for i in range(24)]) == outcome(fresh)
    assert scheduler.completed == {}  # serve() keeps nothing it delivered
    assert scheduler.stats.peak_in_flight <= 12
    with pytest.raises(RuntimeError, match="the scheduler is closed"):
        scheduler.submit(99, ragged, (lm, "a"), {}, algorithm, source)


def test_a_cancelled_problem_is_withdrawn_from_the_engine_and_the_others_are_untouched():
    engine = Stepwise(make_lm(), max_num_seqs=5)
    algorithm, source = SMC(6, ess_threshold=1.0), SeededSource(4)
    scheduler = Scheduler()
    for i, start in enumerate(STARTS[:4]):
        scheduler.submit(i, ragged, (engine, start), {}, algorithm, source)
    seen_in_flight = []

    def on_round(s: Scheduler):
        mine = sum(ticket.particle.problem == 1 for ticket, _ in s._tickets.values())
        seen_in_flight.append((s.stats.rounds, mine, engine.in_flight(), len(s._tickets)))
        if s.stats.rounds == 2:
            assert mine > 0  # problem 1 has requests in the engine when it is cancelled
            assert s.cancel(1, "the client went away")

    delivered = {}
    thread = threading.Thread(target=lambda: delivered.update(scheduler.serve(on_round)))
    thread.start()
    while len(delivered) < 4 and thread.is_alive():
        thread.join(0.05)
    scheduler.close()
    thread.join(timeout=30)
    cancelled = delivered[1]
    assert isinstance(cancelled, Cancelled)
    assert cancelled.reason == "the client went away" and cancelled.particles == 6
    assert scheduler.stats.cancelled == 1 and scheduler.stats.cancelled_particles == 6
    # from the round the cancellation took effect, the engine holds no request of problem 1:
    # every request it holds is one the scheduler still waits for
    assert all(mine == 0 for rounds, mine, _, _ in seen_in_flight if rounds > 2)
    assert all(engine_has == waited for _, _, engine_has, waited in seen_in_flight)
    fresh = algorithm.run(ragged, [(make_lm(), s) for s in STARTS[:4]], seed=4)
    for i in (0, 2, 3):
        assert outcome([delivered[i]]) == outcome([fresh[i]])
    assert not scheduler.cancel(1) and not scheduler.cancel(0)  # delivered: nothing to cancel


def test_a_queued_problem_is_cancelled_before_it_starts():
    lm, algorithm, source = make_lm(), SMC(4), SeededSource(0)
    scheduler = Scheduler(max_particles=4)  # one problem at a time: the second waits
    scheduler.submit(0, ragged, (lm, "a"), {}, algorithm, source)
    scheduler.submit(1, ragged, (lm, "b"), {}, algorithm, source)
    assert scheduler.waiting() == 2
    assert scheduler.cancel(1, "timed out")
    results = dict(scheduler.results())
    assert results[1] == Cancelled("timed out") and results[1].particles == 0
    assert outcome([results[0]]) == outcome(algorithm.run(ragged, [(lm, "a")], seed=0))


def test_closing_with_cancel_cancels_everything_pending_and_ends_serving():
    lm = TabularLM.random(["a", "b"], order=1, seed=3)
    engine = Stepwise(lm, max_num_seqs=2)
    scheduler = Scheduler(max_particles=8)
    for i in range(5):
        scheduler.submit(i, ragged, (engine, "ab"), {}, SMC(4), SeededSource(i))

    def on_round(s: Scheduler):
        if s.stats.rounds == 1:
            s.close(cancel=True, reason="the server is shutting down")

    delivered = dict(scheduler.serve(on_round))
    assert sorted(delivered) == list(range(5))
    assert all(r == Cancelled("the server is shutting down", r.particles, r.tokens_in, r.tokens_out, r.engine_calls)
               for r in delivered.values())  # fmt: skip
    assert sum(r.particles for r in delivered.values()) == 8  # two were in flight, three queued
    assert engine.in_flight() == 0


def test_as_problem_gives_any_id_the_randomness_of_problem_zero():
    lm, algorithm = make_lm(), SMC(5, ess_threshold=1.0)
    alone = algorithm.run(ragged, [(lm, "ab")], seed=7)
    scheduler = Scheduler()
    scheduler.submit(0, ragged, (lm, "ba"), {}, algorithm, SeededSource(7))
    scheduler.submit(41, ragged, (lm, "ab"), {}, algorithm, AsProblem(SeededSource(7), 0))
    results = dict(scheduler.results())
    assert outcome([results[41]]) == outcome(alone)
