"""Every .tts example and its decorator twin give identical traces for the same seed.

The twins of constrained_generation.tts and reward_tilted.tts are the Python examples;
the twins of particle_filter.tts and choices.tts are written here. "Identical" means
equal values, log weights, statuses and sites (kind, value, log weight) for every
particle, and equal evidence — exact equality, not a tolerance.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import numpyro.distributions as dist
import pytest

import ppl
from ppl.algorithms import SMC, ImportanceSampling, enumerate_program
from ppl.app import load

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SEEDS = (0, 1, 2)


def normal(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def sites(particle):
    return [(s.kind, normal(s.value), s.log_weight) for s in particle.trace]


def assert_identical(python_results, tts_results):
    assert len(python_results) == len(tts_results)
    for a, b in zip(python_results, tts_results):
        assert a.log_evidence == b.log_evidence
        assert len(a.particles) == len(b.particles)
        for x, y in zip(a.particles, b.particles):
            assert (x.value, x.log_weight, x.status) == (y.value, y.log_weight, y.status)
            assert sites(x) == sites(y)
        assert a.diagnostics.ess == b.diagnostics.ess
        assert a.diagnostics.resampled == b.diagnostics.resampled


def python_example(name: str) -> dict:
    return runpy.run_path(str(EXAMPLES / name), run_name="example")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("algorithm", [SMC(32, resample="systematic"), ImportanceSampling(16)], ids=repr)
def test_constrained_generation_twins(seed, algorithm):
    twin = python_example("constrained_generation.py")
    module = load(EXAMPLES / "constrained_generation.tts")
    python = algorithm.run(twin["without_dog"], [(twin["LM"],)], seed=seed)
    tts = algorithm.run(module.programs["without_dog"], [()], seed=seed)
    assert_identical(python, tts)
    assert any(p.status == "dead" for p in python[0].particles) or python[0].diagnostics.deaths


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("algorithm", [SMC(32, resample="systematic"), ImportanceSampling(16)], ids=repr)
def test_constrained_regex_twins(seed, algorithm):
    twin = python_example("constrained_regex.py")
    module = load(EXAMPLES / "constrained_regex.tts")
    python = algorithm.run(twin["cat_sentence"], [(twin["LM"],)], seed=seed)
    tts = algorithm.run(module.programs["cat_sentence"], [()], seed=seed)
    assert_identical(python, tts)
    exact = enumerate_program(twin["cat_sentence"], (twin["LM"],))
    assert python[0].log_evidence == pytest.approx(exact.log_evidence, abs=0.5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "algorithm", [SMC(32, resample="systematic", ess_threshold=0.5), ImportanceSampling(16)], ids=repr
)
def test_reward_tilted_twins(seed, algorithm):
    twin = python_example("reward_tilted.py")
    module = load(EXAMPLES / "reward_tilted.tts")
    python = algorithm.run(twin["about_cats"], [(twin["LM"], twin["BETA"])], seed=seed)
    tts = algorithm.run(module.programs["about_cats"], [(twin["BETA"],)], seed=seed)
    assert_identical(python, tts)


def test_the_infer_clauses_match_the_python_examples():
    constrained = load(EXAMPLES / "constrained_generation.tts").infer
    tilted = load(EXAMPLES / "reward_tilted.tts").infer
    assert repr(constrained.algorithm) == repr(SMC(particles=256, resample="systematic"))
    assert repr(tilted.algorithm) == repr(SMC(particles=512, resample="systematic", ess_threshold=0.5))


@pytest.mark.parametrize(
    "name, program, args",
    [
        ("constrained_generation", "without_dog", ()),
        ("reward_tilted", "about_cats", (1.5,)),
    ],
)
def test_exact_enumeration_agrees(name, program, args):
    twin = python_example(f"{name}.py")
    module = load(EXAMPLES / f"{name}.tts")
    python_args = (twin["LM"],) + args
    exact_python = enumerate_program(twin[program], python_args)
    exact_tts = enumerate_program(module.programs[program], args)
    assert exact_python.log_evidence == exact_tts.log_evidence
    assert exact_python.distribution() == exact_tts.distribution()


def text_of(segments):
    return "".join(s.text for s in segments)


@ppl.program
def solve(lm, prm, problem):
    """The decorator twin of examples/particle_filter.tts."""
    prompt = lm.chat(system="Solve step by step. Separate steps by a blank line.", user=problem)
    steps = []
    for _ in ppl.steps(max=12):
        context = prompt + tuple(t for s in steps for t in s.token_ids)
        s = ppl.gen(lm, context, stop=["\n\n"], max_tokens=128)
        steps.append(s)
        ppl.twist(ppl.reward(prm, problem, text_of(steps)))
        if s.eos or "\\boxed" in s.text:
            break
    ppl.score(2.0 * ppl.reward(prm, problem, text_of(steps)))
    text = text_of(steps)
    start = text.rfind("\\boxed{")
    answer = text[start + 7 : text.index("}", start)] if start >= 0 and "}" in text[start:] else ""
    return answer if answer else text


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_particle_filter_twins(seed):
    module = load(EXAMPLES / "particle_filter.tts")
    lm, prm = module.models["lm"], module.models["prm"]
    problem = "What is 7 * 6?"
    algorithm = SMC(4, resample="systematic", ess_threshold=0.5)
    python = algorithm.run(solve, [(lm, prm, problem)], seed=seed)
    tts = algorithm.run(module.programs["solve"], [(problem,)], seed=seed)
    assert_identical(python, tts)
    kinds = {s.kind for p in tts[0].particles for s in p.trace}
    assert {"gen", "reward", "twist", "score"} <= kinds


@ppl.program
def reply(lm, question):
    """The decorator twin of examples/choices.tts."""
    short = bool(ppl.sample(dist.Bernoulli(probs=0.5)))
    limit = 48
    if short:
        limit = 16
    prompt = lm.chat(system="Answer in one line.", user=question)
    answer = ppl.gen(lm, prompt, stop=["\n"], max_tokens=limit, temperature=0.8)
    ppl.observe(dist.Normal(loc=24, scale=8), len(answer.text))
    polite = ppl.select(lm, prompt + answer.token_ids + lm.encode("\nPolite?"), [" yes", " no"])
    ppl.condition(polite == " yes", "the model finds its answer impolite")
    return answer.text


def test_choices_twins():
    module = load(EXAMPLES / "choices.tts")
    lm = module.models["lm"]
    algorithm = ImportanceSampling(6)
    python = algorithm.run(reply, [(lm, "Say hello.")], seed=3)
    tts = algorithm.run(module.programs["reply"], [("Say hello.",)], seed=3)
    assert_identical(python, tts)
    kinds = [s.kind for s in tts[0].particles[0].trace]
    assert kinds[:5] == ["sample", "gen", "observe", "select", "condition"]
    assert np.isfinite(tts[0].log_evidence)
