"""The genealogy a traced run keeps (ppl.history): who descends from whom at every barrier,
and what each interpreter decided there — checked against the interpreters' own results."""

from __future__ import annotations

import json
import math

import pytest

import ppl
from ppl.algorithms import MH, SMC, BeamSearch, ParticleGibbs
from ppl.app.records import trace_record
from ppl.backends import FunctionReward, TabularLM

LM = TabularLM.random(["a", "b", "c"], order=2, seed=3)


@ppl.program
def walk(lm):
    ctx = ()
    for _ in ppl.steps(max=4):
        s = ppl.gen(lm, ctx, max_tokens=1)
        ctx += s.token_ids
        ppl.twist(1.0 * ctx.count(0))
        if s.eos:
            break
    ppl.score(1.0 * ctx.count(0))
    return lm.decode(ctx)


def _history(algorithm, seed=0):
    posterior = algorithm.run(walk, [(LM,)], seed=seed, trace=True)[0]
    return posterior, posterior.diagnostics.history


def _choices(node):
    return [(s.kind, s.value) for s in node.sites if s.kind == "gen"]


def test_an_untraced_run_keeps_no_history_and_tracing_changes_no_result():
    plain = SMC(particles=8, ess_threshold=1).run(walk, [(LM,)], seed=5)[0]
    traced = SMC(particles=8, ess_threshold=1).run(walk, [(LM,)], seed=5, trace=True)[0]
    assert plain.diagnostics.history is None and traced.diagnostics.history
    assert plain.values == traced.values
    assert list(plain.log_weights) == list(traced.log_weights)


def test_smc_genealogy_links_each_copy_to_the_particle_it_was_copied_from():
    posterior, history = _history(SMC(particles=8, ess_threshold=1), seed=2)
    barriers = [g for g in history if g.event == "barrier"]
    assert len(barriers) == posterior.diagnostics.steps and history[-1].event == "end"
    assert [g.notes["ess"] for g in barriers] == posterior.diagnostics.ess
    assert (
        [g.notes["resampled"] for g in barriers] == posterior.diagnostics.resampled == [True] * len(barriers)
    )
    for before, after in zip(history, history[1:]):
        nodes = {n.key: n for n in before.nodes}
        for node in after.nodes:
            assert node.key not in nodes  # resampled at every barrier: every particle is a new copy
            parent = nodes[node.parent]
            # a copy replays its parent's choices, then goes on
            assert _choices(node)[: len(_choices(parent))] == _choices(parent)
        # the parents are the resampled ancestors: each drawn at most N times, live ones only
        assert all(nodes[n.parent].log_weight > -math.inf for n in after.nodes)
    final = {p.key: p for p in posterior.particles}
    assert final.keys() == {n.key for n in history[-1].nodes}
    for node in history[-1].nodes:
        assert node.value == final[node.key].value and node.log_weight == final[node.key].log_weight


def test_mh_notes_every_accept_and_reject_and_chains_move_only_on_acceptance():
    posterior, history = _history(MH(chains=3, steps=5), seed=1)
    rounds = [g for g in history if g.event == "end"]
    assert len(rounds) == 6 and "accepted" not in rounds[0].notes
    current = [n.key for n in rounds[0].nodes]
    accepted = [0, 0, 0]
    for generation in rounds[1:]:
        for c, (node, ok) in enumerate(zip(generation.nodes, generation.notes["accepted"], strict=True)):
            assert node.parent == current[c]  # proposed from the chain's current state
            if ok:
                current[c] = node.key
                accepted[c] += 1
    assert [a / 5 for a in accepted] == posterior.diagnostics.extra["acceptance"]
    assert 0 < sum(accepted) < 15  # the check above saw both outcomes
    assert [p.key for p in posterior.particles[4::5]] == current  # each chain's last state


def test_beam_genealogy_keeps_the_top_runs_and_prunes_the_rest():
    _, history = _history(BeamSearch(beams=2, expand=3, dedupe=False), seed=0)
    pruned = 0
    for before, after in zip(history, history[1:]):
        if before.event != "barrier":
            continue
        frontier = [n for n in before.nodes if n.status == "at_barrier" and n.log_weight > -math.inf]
        ranked = sorted(range(len(frontier)), key=lambda i: -frontier[i].log_weight)
        kept = {frontier[i].key for i in ranked[:2]}
        assert {n.parent for n in after.nodes if n.status != "dead"} <= kept
        assert {n.parent for n in after.nodes} == kept  # each survivor expanded
        assert sum(n.parent == k for n in after.nodes for k in kept) == 3 * len(kept)
        pruned += len(frontier) - len(kept)
    assert pruned > 0


def test_particle_gibbs_notes_the_reference_each_sweep_starts_from():
    posterior, history = _history(ParticleGibbs(particles=3, sweeps=3), seed=4)
    ends = [i for i, g in enumerate(history) if g.event == "end"]
    assert len(ends) == 3
    for end in ends[:-1]:
        reference = history[end].nodes[history[end].notes["reference"]]
        assert history[end + 1].nodes[0].parent == reference.key  # the next sweep's slot 0 replays it
    last = history[ends[-1]]
    assert posterior.particles[-1].key == last.nodes[last.notes["reference"]].key


@ppl.program
def judged(lm, reward):
    ctx = ()
    for _ in ppl.steps(max=3):
        s = ppl.gen(lm, ctx, max_tokens=1)
        ctx += s.token_ids
        r = ppl.reward(reward, lm.decode(ctx))
        ppl.twist(r)
        ppl.condition(not lm.decode(ctx).endswith("cc"), "said cc")
        if s.eos:
            break
    ppl.score(ppl.reward(reward, lm.decode(ctx)))
    return lm.decode(ctx)


def test_the_trace_record_is_json_and_rebuilds_every_particle_from_the_genealogy():
    reward = FunctionReward(lambda text: 0.5 * text.count("a"), name="count_a")
    even = {w: {"a": 1, "b": 1, "c": 2, "<eos>": 1} for w in ("<s>", "a", "b", "c")}
    lm = TabularLM.bigram(even)
    posterior = SMC(particles=8, ess_threshold=1).run(judged, [(lm, reward)], seed=0, trace=True)[0]
    record = trace_record(posterior)
    assert json.loads(json.dumps(record, allow_nan=False)) == record
    full: dict = {}
    for generation in record["generations"]:
        step = {}
        for node in generation["nodes"]:
            before = full.get(tuple(node["key"]), full.get(tuple(node["parent"] or ()), []))
            step[tuple(node["key"])] = before[: node["from"]] + node["sites"]
        full.update(step)
    for particle in record["particles"]:
        assert full[tuple(particle["key"])] == particle["sites"]
    kinds = {site["kind"] for p in record["particles"] for site in p["sites"]}
    assert kinds >= {"gen", "reward", "twist", "condition", "barrier", "score"}
    live = next(p for p in posterior.particles if p.status == "finished")
    sites = trace_record(posterior)["particles"][posterior.particles.index(live)]["sites"]
    gens = [s for s in live.trace if s.kind == "gen"]
    assert [s["text"] for s in sites if s["kind"] == "gen"] == [s.value.text for s in gens]
    assert [s["tokens"] for s in sites if s["kind"] == "gen"] == [len(s.value.token_ids) for s in gens]
    rewards = [s["value"] for s in sites if s["kind"] == "reward"]
    assert rewards == [pytest.approx(0.5 * n) for n in _a_counts(live)] and len(rewards) >= 2
    deaths = [n for g in record["generations"] for n in g["nodes"] if n["status"] == "dead"]
    assert deaths and all(n["error"] == "said cc" and n["log_weight"] is None for n in deaths)


def _a_counts(particle) -> list[int]:
    """The number of a's in the text after each generated token, for each reward call."""
    counts, text = [], ""
    for site in particle.trace:
        if site.kind == "gen":
            text += site.value.text
        elif site.kind == "reward":
            counts.append(text.count("a"))
    return counts
