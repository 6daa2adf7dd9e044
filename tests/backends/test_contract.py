"""The backend contract: what every ``ppl.interfaces.LanguageModel`` promises the interpreters.

Each test runs on every backend of ``conftest.py`` — tabular (fast tier), vLLM and the
OpenAI-compatible servers (engine tier) — with the tolerances and promises stated there.
Backend-specific behaviour lives beside it: ``test_tabular.py`` (exact support, the table),
``tests/engine/test_vllm_backend.py`` (prefix cache, engine start, token budget) and
``tests/engine/test_openai_backend.py`` (affinity, failures, timeouts).

The contract: a tokenizer whose round trips hold and a chat prompt; ``generate`` answers
``n`` segments per request in request order; finish reasons are eos/stop/length, a stop
string is included in the text and nothing runs past it, ``max_tokens`` is respected;
``Segment.logprob`` is the sum of its token log-probabilities (EOS included); seeded
requests reproduce; temperature 0 is greedy, a point mass; ``logprob`` of a generated
continuation agrees with the generation's log-probability; the usage counters add up; bad
requests are refused with clear errors before any engine call.
"""

from __future__ import annotations

import itertools
import math

import pytest

from ppl import GenRequest, ScoreRequest
from ppl.interfaces import FINISH_REASONS, LanguageModel, Usage


def test_it_is_a_language_model(backend):
    lm = backend.lm
    assert isinstance(lm, LanguageModel)
    assert isinstance(lm.name, str) and lm.name
    assert isinstance(lm.eos_token_id, int)
    assert isinstance(lm.usage, Usage)


def test_tokenizer_round_trips(backend):
    lm = backend.lm
    ids = lm.encode(backend.text)
    assert ids and all(isinstance(t, int) for t in ids)
    assert lm.decode(ids) == backend.text
    assert lm.encode(lm.decode(ids)) == ids


def test_chat_prompt_token_ids_round_trip(backend):
    lm = backend.lm
    prompt = lm.chat(user=backend.user, system=backend.system)
    assert isinstance(prompt, tuple) and prompt
    assert lm.encode(lm.decode(prompt)) == prompt
    assert backend.user in lm.decode(prompt) and backend.system in lm.decode(prompt)
    bare = lm.chat(user=backend.user)
    assert backend.user in lm.decode(bare) and bare != prompt


def grid(backend) -> list[GenRequest]:
    """Every combination of the backend's grid as one batch; ``n`` cycles through 1, 2, 3 (1 for
    greedy requests where the backend refuses greedy branches) and the grid varies
    ``max_tokens``, so an answer out of order is seen."""
    combinations = itertools.product(backend.max_tokens, backend.stops, backend.temperatures, backend.seeds)
    return [
        GenRequest(backend.prompt, max_tokens=m, stop=stop, temperature=t, seed=s, n=branches(backend, t, i))
        for i, (m, stop, t, s) in enumerate(combinations)
    ]


def branches(backend, temperature: float, i: int) -> int:
    return 1 if temperature == 0 and not backend.greedy_branches else 1 + i % 3


def check_segment(backend, request: GenRequest, s) -> None:
    lm, stop = backend.lm, request.stop
    assert s.finish_reason in FINISH_REASONS
    assert s.text == lm.decode(s.token_ids)
    assert len(s) + s.eos <= request.max_tokens
    if s.finish_reason == "length":
        assert len(s) == request.max_tokens
    # no stop string before the end; the last token completes one when it stopped the segment
    assert not any(x in lm.decode(s.token_ids[:-1]) for x in stop)
    if s.finish_reason == "stop":
        hit = [x for x in stop if x in s.text]
        assert hit, "a stop string is included in the text"
        assert any(x in lm.decode(s.token_ids[-1:]) or s.text.endswith(x) for x in hit)
        if backend.stop_ends_text:
            assert any(s.text.endswith(x) for x in stop)
    else:
        assert not any(x in s.text for x in stop)
    assert len(s.token_logprobs) == len(s) + s.eos
    if request.temperature > 0:
        assert s.logprob == pytest.approx(sum(s.token_logprobs), abs=backend.logprob_abs)
        assert all(x <= 0 for x in s.token_logprobs) and math.isfinite(s.logprob)
    else:
        assert s.logprob == 0.0  # greedy: a point mass
        if backend.greedy_token_logprobs_zero:
            assert sum(s.token_logprobs) == pytest.approx(0.0, abs=backend.logprob_abs)


def same_segments(got, expected, tolerance: float) -> bool:
    """The same segments, token for token, with log-probabilities within ``tolerance``."""
    if [[(s.token_ids, s.text, s.finish_reason) for s in segments] for segments in got] != [
        [(s.token_ids, s.text, s.finish_reason) for s in segments] for segments in expected
    ]:
        return False
    pairs = [(a, b) for x, y in zip(got, expected) for a, b in zip(x, y)]
    return all(
        a.logprob == pytest.approx(b.logprob, abs=tolerance * max(1, len(a.token_ids)))
        and a.token_logprobs == pytest.approx(b.token_logprobs, abs=tolerance)
        for a, b in pairs
    )


def test_generation_contract(backend):
    """n segments per request, in request order, each honouring its stop strings, max tokens
    and temperature; the same seeded batch twice gives the same answers."""
    lm = backend.lm
    requests = grid(backend)
    answers = lm.generate(requests)
    assert len(answers) == len(requests)
    reasons = set()
    for request, segments in zip(requests, answers):
        assert len(segments) == request.n
        for s in segments:
            check_segment(backend, request, s)
            reasons.add(s.finish_reason)
        if request.temperature == 0:
            assert len({s.token_ids for s in segments}) == 1
    assert {"stop", "length"} <= reasons, "the grid reaches both stop strings and max_tokens"
    sampled = [segments for r, segments in zip(requests, answers) if r.temperature > 0 and r.n > 1]
    assert any(len({s.token_ids for s in segments}) > 1 for segments in sampled), "n branches are n draws"
    # same seeds, same answers: the same tokens; log-probabilities to the engine's resolution
    # (a server batches concurrent requests as they arrive, and sums depend on the batch)
    assert same_segments(lm.generate(requests), answers, backend.batch_abs)
    if backend.seeded_alone_equals_batch:
        for request, segments in list(zip(requests, answers))[:: max(1, len(requests) // 4)]:
            assert same_segments(lm.generate([request]), [segments], backend.batch_abs)
    if backend.scores_any_temperature:
        scored = [(r, s) for r, segments in zip(requests, answers) for s in segments]
        scores = lm.logprob([ScoreRequest(r.prompt, s.token_ids, s.eos, r.temperature) for r, s in scored])
        for (_, s), score in zip(scored, scores):
            assert score == pytest.approx(s.logprob, abs=backend.score_abs)


def test_seeded_requests_reproduce(backend):
    lm = backend.lm
    request = GenRequest(backend.short_prompt, max_tokens=8, temperature=1.0, seed=7, n=3)
    first = lm.generate([request, request])
    assert len(first) == 2 and all(len(branches) == 3 for branches in first)
    # the same tokens; log-probabilities to the engine's resolution (sums depend on the batch)
    tolerance = backend.batch_abs
    assert same_segments(first[:1], first[1:], tolerance), "the same seed in one batch, the same segments"
    again = lm.generate([request, request])
    assert same_segments(again, first, tolerance), "the same seed must give the same result within one engine"
    if backend.seeded_alone_equals_batch:
        assert same_segments(lm.generate([request]), first[:1], tolerance)
    others = lm.generate([GenRequest(backend.short_prompt, 8, temperature=1.0, seed=s, n=3) for s in (8, 9)])
    assert any(branches != first[0] for branches in others), "the seed must matter"


def test_temperature_zero_is_greedy(backend):
    """Greedy segments are a point mass and deterministic: n branches (where the backend
    offers them), the same request twice in a batch, and a second call all agree."""
    lm = backend.lm
    n = 3 if backend.greedy_branches else 1
    request = GenRequest(backend.short_prompt, max_tokens=6, temperature=0.0, n=n)
    first, second = lm.generate([request, request])
    assert len(first) == n and same_segments([first], [second], backend.batch_abs)
    assert len({s.token_ids for s in first}) == 1
    for s in first:
        check_segment(backend, request, s)
        assert s.logprob == 0.0
    assert same_segments(lm.generate([request]), [first], backend.batch_abs), (
        "greedy decoding is deterministic"
    )
    if not backend.greedy_branches:
        with pytest.raises(Exception, match="n must be 1 when using greedy sampling"):
            lm.generate([GenRequest(backend.short_prompt, max_tokens=6, temperature=0.0, n=3)])


def test_scores_agree_with_sampled_logprobs(backend):
    """At temperature 1 the recorded log-probability of a segment equals a fresh score of the
    same tokens (within the backend's tolerance); other temperatures only where promised."""
    lm = backend.lm
    sampled = lm.generate(
        [
            GenRequest(backend.short_prompt, max_tokens=backend.score_max_tokens, temperature=1.0, seed=s)
            for s in range(4)
        ]
    )
    scores = lm.logprob([ScoreRequest(backend.short_prompt, s.token_ids, s.eos) for (s,) in sampled])
    assert len(scores) == len(sampled)
    for (segment,), score in zip(sampled, scores):
        assert score == pytest.approx(segment.logprob, abs=backend.score_abs)
    cooled = lm.generate([GenRequest(backend.short_prompt, max_tokens=4, temperature=0.5, seed=1)])[0][0]
    cool_request = ScoreRequest(backend.short_prompt, cooled.token_ids, cooled.eos, temperature=0.5)
    if backend.scores_any_temperature:
        assert lm.logprob([cool_request])[0] == pytest.approx(cooled.logprob, abs=backend.score_abs)
    else:
        calls = lm.usage.calls
        with pytest.raises(ValueError, match="temperature 1 only"):
            lm.logprob([cool_request])
        assert lm.usage.calls == calls, "refused before any engine call"


def test_usage_counters_add_up(backend):
    lm = backend.lm
    before = (lm.usage.calls, len(lm.usage.batch_sizes), lm.usage.requests)
    tokens_before = (lm.usage.prompt_tokens, lm.usage.generated_tokens)
    requests = [GenRequest(backend.short_prompt, max_tokens=3, seed=i, n=2) for i in range(5)]
    answers = lm.generate(requests)
    continuation = lm.encode(backend.text)[:2]
    lm.logprob([ScoreRequest(backend.short_prompt, continuation)])
    assert lm.usage.calls - before[0] == 2 and lm.usage.batch_sizes[before[1] :] == [5, 1]
    assert lm.usage.requests - before[2] == 6
    assert lm.usage.generated_tokens - tokens_before[1] == sum(len(s) + s.eos for a in answers for s in a)
    per_branch = 2 if backend.prompt_tokens_per_branch else 1
    expected = 5 * per_branch * len(backend.short_prompt) + len(backend.short_prompt) + len(continuation)
    assert lm.usage.prompt_tokens - tokens_before[0] == expected
    assert lm.usage.wall_time > 0


@pytest.mark.parametrize(
    "bad",
    [
        dict(max_tokens=0),
        dict(max_tokens=1, temperature=-1),
        dict(max_tokens=1, temperature=math.inf),
        dict(max_tokens=1, n=0),
        dict(max_tokens=1, stop=("",)),
    ],
)
def test_bad_generation_requests_are_refused(bad):
    """A bad request never reaches a backend: the request type refuses it (backend-independent)."""
    with pytest.raises(ValueError):
        GenRequest((), **bad)


def test_bad_score_requests_are_refused_before_any_engine_call(backend):
    lm = backend.lm
    calls = lm.usage.calls
    empty = ScoreRequest((), lm.encode(backend.text)[:1])
    if backend.scores_empty_prompt:
        assert math.isfinite(lm.logprob([empty])[0])
    else:
        with pytest.raises(ValueError, match="non-empty prompt"):
            lm.logprob([empty])
        assert lm.usage.calls == calls
