"""The LM-as-judge's one-request verdicts: a ``NextTokenRequest`` per judged item equals
the two scored continuations of the old path exactly (tabular), costs one LM request per
item, and the judge falls back to scoring for multi-token answers or an LM without
next-token reads. The same on the engine is in tests/engine/test_judge_engine.py."""

from __future__ import annotations

import math

import pytest

import ppl
from ppl.algorithms import SMC
from ppl.app.models import character_lm
from ppl.backends.judge import Judge
from ppl.backends.prm import JudgeSteps, ProcessReward
from ppl.backends.stepwise import Stepwise
from ppl.backends.tabular import TabularLM
from ppl.interfaces import NextTokenRequest, RewardRequest, ScoreRequest, has_next_token_logprobs

QUESTION = "Is it right?"
WORDS = [QUESTION, "Yes", "No", "2+2", "1+3", "4", "5", "22", "\n\n", "Yes or No?"]
# every judged item: (problem, answer); the answer's last token is in the LM's context
ITEMS = [("2+2", "4"), ("2+2", "5"), ("2+2", "22"), ("1+3", "Yes"), ("1+3", "4 No"), ("2+2", "22 1+3")]


def word_lm(seed: int = 7) -> TabularLM:
    """Words as tokens, so "Yes" and "No" are one token each; order 3 sees the answer's
    last word before "\\n\\nYes or No?", so different answers get different verdicts."""
    return TabularLM.random([*WORDS, " "], order=3, seed=seed)


class ScoringOnly:
    """A LanguageModel without next-token reads: the tabular LM's encode/chat/logprob only."""

    def __init__(self, lm):
        self._lm, self.name, self.eos_token_id, self.usage = lm, lm.name, lm.eos_token_id, lm.usage

    def encode(self, text):
        return self._lm.encode(text)

    def decode(self, ids):
        return self._lm.decode(ids)

    def chat(self, *, user, system=None):
        return self._lm.chat(user=user, system=system)

    def generate(self, requests):
        return self._lm.generate(requests)

    def logprob(self, requests):
        return self._lm.logprob(requests)


def requests(items=ITEMS):
    return [RewardRequest(item) for item in items]


def by_hand(lm, problem, answer) -> float:
    """log p(Yes) − log p(No) read off the table at the prompt's end."""
    prompt = lm.chat(system=QUESTION, user=f"{problem}\n\n{answer}\n\nYes or No?")
    logprobs = lm.next_logprobs(prompt)
    return float(logprobs[lm.encode("Yes")[0]] - logprobs[lm.encode("No")[0]])


def test_one_token_verdicts_equal_the_scoring_path_exactly():
    fast, slow = Judge(word_lm(), QUESTION), Judge(word_lm(), QUESTION, next_token=False)
    assert fast.next_token and not slow.next_token
    new, old = fast.reward(requests()), slow.reward(requests())
    assert len(set(new)) == len(ITEMS), "the items must get different verdicts for this test to mean much"
    for item, a, b in zip(ITEMS, new, old):
        assert a == pytest.approx(b, abs=1e-12)
        assert a == pytest.approx(by_hand(fast.lm, *item), abs=1e-12)


def test_the_judge_asks_one_request_per_new_item_in_one_call():
    lm = word_lm()
    judge = Judge(lm, QUESTION)
    judge.reward(requests(ITEMS + ITEMS[:2]))  # repeats inside a batch are asked once
    assert (lm.usage.calls, lm.usage.requests) == (1, len(ITEMS))
    assert judge.usage.requests == len(ITEMS)
    judge.reward(requests(ITEMS[:3]))  # memoised: no new LM work
    assert (lm.usage.calls, lm.usage.requests) == (1, len(ITEMS))
    slow_lm = word_lm()
    Judge(slow_lm, QUESTION, next_token=False).reward(requests())
    assert (slow_lm.usage.calls, slow_lm.usage.requests) == (1, 2 * len(ITEMS))


def test_a_problems_judge_prompts_share_its_prefix():
    lm = word_lm()
    judge = Judge(lm, QUESTION)
    prompts = [judge.prompt("2+2", answer) for answer in ("4", "22 4 Yes", "5")]
    shared = lm.encode(QUESTION + "2+2\n\n")  # the question and the problem come first
    assert all(p[: len(shared)] == shared for p in prompts)
    assert len({p[len(shared) :] for p in prompts}) == 3


def test_multi_token_answers_and_lms_without_next_token_reads_fall_back_to_scoring():
    spelt = character_lm("judge-fallback")  # "Yes" is three characters
    judge = Judge(spelt, "Right?")
    assert has_next_token_logprobs(spelt) and not judge.next_token
    [value] = judge.reward([RewardRequest(("1+1", "2"))])
    prompt = judge.prompt("1+1", "2")
    yes, no = spelt.logprob(
        [ScoreRequest(prompt, spelt.encode("Yes")), ScoreRequest(prompt, spelt.encode("No"))]
    )
    assert value == pytest.approx(yes - no, abs=1e-12)
    assert (spelt.usage.calls, spelt.usage.requests) == (2, 4)  # the judge's call: 2 scored; ours: 2

    lm = word_lm()
    plain = ScoringOnly(lm)
    judge = Judge(plain, QUESTION)
    assert not has_next_token_logprobs(plain) and not judge.next_token
    values = judge.reward(requests())
    assert values == pytest.approx(Judge(word_lm(), QUESTION).reward(requests()), abs=1e-12)
    assert lm.usage.requests == 2 * len(ITEMS)


def test_one_request_verdicts_refused_clearly_when_impossible():
    with pytest.raises(ValueError, match="one token each"):
        Judge(character_lm("judge-refuse"), "Right?", next_token=True)
    with pytest.raises(ValueError, match="has no next_token_logprobs"):
        Judge(ScoringOnly(word_lm()), QUESTION, next_token=True)
    with pytest.raises(ValueError, match="same tokens"):
        Judge(word_lm(), QUESTION, yes="Yes", no="Yes")


def test_next_token_requests_are_checked():
    lm = word_lm()
    with pytest.raises(ValueError, match="non-empty prompt"):
        NextTokenRequest((), (1,))
    with pytest.raises(ValueError, match="one or more token ids"):
        NextTokenRequest((1,), ())
    with pytest.raises(ValueError, match="one or more token ids"):
        NextTokenRequest((1,), (1.0,))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        lm.next_token_logprobs([NextTokenRequest((1,), (lm.eos_token_id + 1,))])
    [(a, eos)] = lm.next_token_logprobs([NextTokenRequest((1, 2), (3, lm.eos_token_id))])
    assert math.exp(a) + math.exp(eos) < 1 and (a, eos) == tuple(
        lm.next_logprobs((1, 2))[[3, lm.eos_token_id]]
    )
    assert NextTokenRequest((1,), (2,)).grouped(5).group == 5


def test_judge_step_verdicts_take_one_request_per_prefix_and_equal_scoring():
    steps = ["4", "22", "5"]
    fast_lm, slow_lm = word_lm(), word_lm()
    fast = ProcessReward(JudgeSteps(Judge(fast_lm, QUESTION)), "prod")
    slow = ProcessReward(JudgeSteps(Judge(slow_lm, QUESTION, next_token=False)), "prod")
    asked = [
        RewardRequest(("2+2", steps)),
        RewardRequest(("2+2", steps[:2])),
        RewardRequest(("1+3", steps[:1])),
    ]
    new, old = fast.reward(asked), slow.reward(asked)
    assert new == pytest.approx(old, abs=1e-12) and len(set(new)) == 3
    assert (fast_lm.usage.calls, fast_lm.usage.requests) == (
        1,
        4,
    )  # 3 prefixes of one problem, 1 of the other
    assert slow_lm.usage.requests == 8


def test_stepwise_streams_next_token_reads_when_the_lm_has_them():
    lm = Stepwise(word_lm())
    assert lm.streams("next_token_logprobs") and not Stepwise(ScoringOnly(word_lm())).streams(
        "next_token_logprobs"
    )
    judge = Judge(lm, QUESTION)
    parts = [NextTokenRequest(judge.prompt(*item), (1, 2)) for item in ITEMS]
    tickets = lm.submit("next_token_logprobs", parts)
    done = {}
    while lm.in_flight():
        done.update(lm.poll())
    assert [done[t] for t in tickets] == lm.lm.next_token_logprobs(parts)
    assert judge.next_token and judge.reward(requests()) == Judge(word_lm(), QUESTION).reward(requests())
    with pytest.raises(ValueError, match="does not stream"):
        Stepwise(ScoringOnly(word_lm())).submit("next_token_logprobs", parts)


class RecordingStepwise(Stepwise):
    """The streaming engine, noting for each submission its method and how many generations
    were still running or waiting in the engine."""

    def __init__(self, lm, **settings):
        super().__init__(lm, **settings)
        self.submissions: list[tuple[str, int]] = []

    def submit(self, method, parts):
        generating = sum(m == "generate" for _, m, _ in self._waiting)
        generating += sum(isinstance(entry[0], list) for entry in self._running.values())
        self.submissions.append((method, generating))
        return super().submit(method, parts)


def judged(lm, judge):
    @ppl.program
    def program(problem):
        ctx = lm.chat(user=problem)
        for _ in ppl.steps(max=3):
            s = ppl.gen(lm, ctx, max_tokens=4)
            ctx += s.token_ids
            ppl.twist(ppl.reward(judge, problem, lm.decode(ctx)))
            if s.eos:
                break
        return lm.decode(ctx)

    return program


def test_judge_verdicts_stream_into_the_engine_beside_generations_with_unchanged_values():
    """A delegating judge's verdicts enter the engine as next-token requests the moment a
    particle asks, while other particles still generate; the posterior equals the run whose
    judge is called once per round (exactly, on the tabular LM)."""
    streaming = RecordingStepwise(word_lm(), max_num_seqs=64)
    problems = [("2+2",), ("1+3",)]
    stream_run = SMC(6, resample="multinomial", ess_threshold=1.0).run(
        judged(streaming, Judge(streaming, QUESTION)), problems, seed=3
    )

    class RoundJudge(Judge):
        def delegates(self, method):
            return False

    plain = word_lm()
    round_run = SMC(6, resample="multinomial", ess_threshold=1.0).run(
        judged(plain, RoundJudge(plain, QUESTION)), problems, seed=3
    )
    for a, b in zip(stream_run, round_run):
        assert [p.value for p in a.particles] == [p.value for p in b.particles]
        assert [p.log_weight for p in a.particles] == pytest.approx(
            [p.log_weight for p in b.particles], abs=1e-12
        )
        assert a.log_evidence == pytest.approx(b.log_evidence, abs=1e-12)
    verdicts = [generating for method, generating in streaming.submissions if method == "next_token_logprobs"]
    assert verdicts and max(verdicts) > 0, "some verdicts entered while generations were running"
    assert ("judge(" + streaming.name + ")", "reward") not in stream_run.stats.calls
    assert round_run.stats.calls[(f"judge({plain.name})", "reward")] >= 1


# ---- the tabular world's judge: verdicts that depend on the text ----------------------------------------


def test_the_tabular_judge_is_typicality_exactly():
    """verdict = Σ_i (log p(a_i) + H_i) / √n, computed by hand from the table; over one-token
    answers it averages to zero under the LM itself (EOS, which no answer holds, included)."""
    import itertools

    from ppl.backends.tabular import TabularJudge

    lm = TabularLM.random(["a", "b", "c"], order=2, seed=5)
    judge = TabularJudge(lm, "ok?")
    prompt = lm.encode("ab")

    def entropy(logprobs):
        return -sum(math.exp(x) * x for x in logprobs if x > -math.inf)

    ids = lm.encode("cab")
    by_hand = sum(
        lm.next_logprobs(prompt + ids[:i], 1.0)[t] + entropy(lm.next_logprobs(prompt + ids[:i], 1.0))
        for i, t in enumerate(ids)
    ) / math.sqrt(3)
    assert judge.verdict("ab", "cab") == pytest.approx(by_hand, abs=1e-12)
    first = lm.next_logprobs(prompt, 1.0)
    mean = sum(math.exp(first[t]) * judge.verdict("ab", c) for t, c in enumerate("abc"))
    eos = first[lm.eos_token_id]
    assert mean + math.exp(eos) * (eos + entropy(first)) == pytest.approx(0.0, abs=1e-12)
    verdicts = {judge.verdict("ab", "".join(a)) for a in itertools.product("abc", repeat=3)}
    assert len(verdicts) == 27  # every text its own verdict
    assert judge.reward([RewardRequest(("ab", ""))]) == [0.0]


@pytest.mark.parametrize(
    "example, question",
    [
        ("particle_filter", "What is 7 * 6?"),
        ("prm_particle_filter", "What is 3 + 4?"),
        ("scaling_demo", "What is 3 + 4?"),
    ],
)
def test_tabular_runs_of_the_judged_examples_resample_and_rank(example, question):
    """On --backend tabular a judge(...) or prm(model = ...) on the stand-in LM is a
    TabularJudge: the weights differ, SMC resamples, the answers are ranked."""
    from pathlib import Path

    from ppl.app import load
    from ppl.backends.tabular import TabularJudge

    module = load(Path(__file__).resolve().parent.parent / "examples" / f"{example}.tts", backend="tabular")
    judges = [
        m for m in module.models.values() if isinstance(getattr(m, "scorer", m), (TabularJudge, JudgeSteps))
    ]
    assert judges
    posterior = module.infer.run([(question,)], seed=0)[0]
    assert any(posterior.diagnostics.resampled)
    weights = sorted(posterior.distribution().values(), reverse=True)
    assert len(weights) > 1 and weights[0] > 1.5 * weights[-1]  # ranked, not uniform
