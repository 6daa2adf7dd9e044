"""The library of compound programs (examples/): mixture-of-agents, universal
self-consistency, self-refine, an Archon-style architecture, program-of-thought with
verification, plan–verify–select (a nested run), START-style tool hints, decompose–solve
(Atom of Thoughts-like) and retrieval with evidence reranking, each a .tts file and its
Python twin with identical traces
on the tabular backend, and the batching of a layered pipeline: one engine call per
(layer, round) whatever the number of problems and samples per site."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
from test_tts_traces import assert_identical

from ppl.algorithms import SMC, ImportanceSampling
from ppl.app import load
from ppl.text import last_number

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PROBLEMS = ["Zoe has 8 shells and gives away 2. How many are left?", "What is 3 + 4?"]
PAIRS = {  # example → (program, the models its Python twin takes before the problem)
    "mixture_of_agents": ("mixture", ("lm",)),
    "universal_self_consistency": ("usc", ("lm",)),
    "self_refine": ("self_refine", ("lm",)),
    "archon": ("archon", ("lm", "judge")),
    "program_of_thought": ("pot", ("lm", "py")),
    "plan_verify_select": ("plan_verify_select", ("lm", "judge")),
    "start_tool_hints": ("start", ("lm", "py")),
    "decompose_solve": ("decompose_solve", ("lm",)),
    "retrieval_rerank": ("retrieve_rerank", ("lm", "docs")),
}


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("algorithm", [ImportanceSampling(3), SMC(2, ess_threshold=1.0)], ids=repr)
def test_library_twins_give_identical_traces(name, algorithm):
    module = load(EXAMPLES / f"{name}.tts")
    twin = runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="example")
    program, uses = PAIRS[name]
    models = tuple(module.models[u] for u in uses)
    python = algorithm.run(twin[program], [(*models, p) for p in PROBLEMS], seed=2)
    tts = algorithm.run(module.programs[program], [(p,) for p in PROBLEMS], seed=2)
    assert_identical(python, tts)
    if name == "program_of_thought":  # the random character LM writes no valid program
        assert all(
            r.startswith("the program failed: error (error): ")
            for post in tts
            for r in post.diagnostics.deaths
        )
    else:
        assert all(p.status == "finished" for post in tts for p in post.particles)


@pytest.mark.parametrize("problems, particles", [(1, 2), (3, 4), (5, 3)])
def test_a_layered_pipeline_makes_one_engine_call_per_layer(problems, particles):
    module = load(EXAMPLES / "mixture_of_agents.tts")
    results = ImportanceSampling(particles).run(
        module.programs["mixture"], [(PROBLEMS[0],)] * problems, seed=0
    )
    calls = results.stats.batch_sizes[("smollm2-135m-instruct", "generate")]
    assert calls == [problems * particles] * 3  # two proposer layers and the aggregator
    for post in results:
        for particle in post.particles:
            layers = [s for s in particle.trace if s.kind == "gen"]
            assert [s.args["request"].n for s in layers] == [3, 3, 1]


def test_universal_self_consistency_scores_every_response_in_one_call():
    module = load(EXAMPLES / "universal_self_consistency.tts")
    results = ImportanceSampling(2).run(module.programs["usc"], [(p,) for p in PROBLEMS], seed=0)
    assert results.stats.batch_sizes[("smollm2-135m-instruct", "generate")] == [4]
    assert results.stats.batch_sizes[("smollm2-135m-instruct", "logprob")] == [
        4 * 4
    ]  # 4 options, 4 particles


@pytest.mark.parametrize("problems, particles", [(1, 2), (4, 3)])
def test_an_archon_style_pipeline_makes_one_call_per_layer_and_round(problems, particles):
    """generator, three critic rounds, fuser: five generation calls, each of every particle of
    every problem; the ranker's options are scored in one call, and the verifier judges in one."""
    module = load(EXAMPLES / "archon.tts")
    results = ImportanceSampling(particles).run(
        module.programs["archon"], [(PROBLEMS[0],)] * problems, seed=0
    )
    generate = results.stats.batch_sizes[("smollm2-135m-instruct", "generate")]
    assert generate == [problems * particles] * 5
    ranked = results.stats.batch_sizes[("smollm2-135m-instruct", "logprob")]
    assert ranked == [problems * particles * 3]  # the ranker: three options per particle, one call
    assert results.stats.batch_sizes[("judge", "reward")] == [problems * particles]  # the verifier


def code_writing_lm():
    """A character LM that, after a question mark, writes ``print(6)``, ``print(7)`` or
    ``print(x)`` (a NameError), each with probability 1/3."""
    import math

    from ppl.app.models import CHARACTERS, CharacterLM

    vocab = list(CHARACTERS)
    chain = {"?": "p", "p": "r", "r": "i", "i": "n", "n": "t", "t": "(", "6": ")", "7": ")", "x": ")"}
    table = {}
    for char in set(chain) | {"(", ")"}:
        logits = [-math.inf] * (len(vocab) + 1)
        if char == "(":
            for digit in "67x":
                logits[vocab.index(digit)] = 0.0
        elif char == ")":
            logits[len(vocab)] = 0.0  # end of sequence
        else:
            logits[vocab.index(chain[char])] = 0.0
        table[(vocab.index(char),)] = logits
    return CharacterLM(vocab, table, order=1, name="code-writer")


def test_program_of_thought_is_exact_on_a_code_writing_lm():
    """Enumerated exactly, the sandbox run at each branch: the failing program's branch has
    weight zero with its reason, and agreement with the independent solution scores e."""
    import math

    from ppl.algorithms import enumerate_program

    module = load(EXAMPLES / "program_of_thought.tts", models={"lm": code_writing_lm()})
    post = enumerate_program(module.programs["pot"], ("How many?",))
    assert post.log_evidence == pytest.approx(math.log(2 / 9 * (math.e + 2)), abs=1e-9)
    assert post.distribution() == pytest.approx({"6": 0.5, "7": 0.5}, abs=1e-12)
    reasons = {p.error.split("\n")[0] for p in post.particles if p.error}
    assert reasons == {"the program failed: error (error): NameError: name 'x' is not defined"}


def test_plan_verify_select_weighs_plans_inside_and_never_outside():
    """The nested run's plans carry the judge's weights; the outer particles' weights are
    their own (no score outside the nested run: zero), and the plans' generations of every
    outer particle of every problem are one engine call."""
    from ppl.interfaces import RewardRequest

    module = load(EXAMPLES / "plan_verify_select.tts")
    judge = module.models["judge"]
    program = module.programs["plan_verify_select"]
    results = ImportanceSampling(2).run(program, [(p,) for p in PROBLEMS], seed=0)
    assert results.stats.batch_sizes[("smollm2-135m-instruct", "generate")] == [2 * 2 * 3, 2 * 2]
    for problem, post in zip(PROBLEMS, results):
        assert all(p.log_weight == 0.0 for p in post.particles) and post.log_evidence == 0.0
        for particle in post.particles:
            (site,) = [s for s in particle.trace if s.kind == "infer"]
            verdicts = judge.reward([RewardRequest((problem, plan)) for plan in site.value.values])
            assert site.value.log_weights == tuple(verdicts)  # each plan weighed by the judge
            assert site.log_weight == 0.0


def test_start_tool_hints_reads_the_error_and_goes_on():
    """The random character LM writes no valid program: every tool answer is an error, the
    error text is in the context of the last generation, and every particle finishes."""
    module = load(EXAMPLES / "start_tool_hints.tts")
    lm = module.models["lm"]
    post = ImportanceSampling(3).run(module.programs["start"], [(PROBLEMS[1],)], seed=0)[0]
    for particle in post.particles:
        assert particle.status == "finished"
        (tool,) = [s for s in particle.trace if s.kind == "tool"]
        status, text = tool.value
        assert status == "error"
        last = [s for s in particle.trace if s.kind == "gen"][-1]
        prompt = lm.decode(last.args["request"].prompt)
        assert prompt.endswith(lm.decode(lm.encode(f"```\nOutput: error ({status}): {text}\n")))


def test_decompose_solve_solves_each_kept_subquestion_in_turn():
    """The subquestions are the plan's non-empty lines (at most three); each is solved with
    the answers before it in its prompt, then the contraction and the answer: 1 + m + 2
    generations, and one engine call per round for every particle of every problem."""
    module = load(EXAMPLES / "decompose_solve.tts")
    lm = module.models["lm"]
    results = ImportanceSampling(3).run(module.programs["decompose_solve"], [(p,) for p in PROBLEMS], seed=1)
    rounds = results.stats.batch_sizes[("smollm2-135m-instruct", "generate")]
    assert rounds[0] == 2 * 3 and sum(rounds) == sum(len(p.trace) for post in results for p in post.particles)
    for post in results:
        for particle in post.particles:
            plan, *steps, contraction, answer = [s for s in particle.trace if s.kind == "gen"]
            questions = [q.strip() for q in plan.value.text.split("\n") if q.strip()][:3]
            assert len(steps) == len(questions)
            for i, (question, step) in enumerate(zip(questions, steps)):
                prompt = lm.decode(step.args["request"].prompt)
                assert f"Question: {question}" in prompt
                for before, earlier in zip(questions[:i], steps):
                    assert f"- {before} {earlier.value.text.strip()}" in prompt
            assert particle.value == last_number(answer.value.text)


def test_retrieval_reranks_the_bm25_top_k_by_the_lms_likelihood():
    """The tool site's passages are bm25s's own top-k; the evidence is one of them, drawn by
    an exact choice (``select``, tested exactly in its own tests) whose options were scored in
    one call for every particle; the answer's prompt holds it."""
    module = load(EXAMPLES / "retrieval_rerank.tts")
    docs, lm = module.models["docs"], module.models["lm"]
    question = "How many days are in 2 weeks?"
    post = ImportanceSampling(4).run(module.programs["retrieve_rerank"], [(question,)], seed=0)
    (top,) = docs.search([question], 4)
    expected = tuple(docs.documents[i] for i in top)
    assert "A week has 7 days." in expected
    assert post.stats.batch_sizes[("smollm2-135m-instruct", "logprob")] == [4 * 4]
    for particle in post[0].particles:
        tool, choice, gen = particle.trace
        assert tool.kind == "tool" and tool.value == expected
        assert choice.value in expected and choice.log_weight == 0.0
        assert f"Fact: {choice.value}\n" in lm.decode(gen.args["request"].prompt)
