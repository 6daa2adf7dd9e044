"""The OpenAI-compatible backend against real ``vllm serve`` processes on 127.0.0.1.

The backend contract runs on this backend in tests/backends/test_contract.py; here: what
only several servers behind one LanguageModel offer — prefix affinity, and failures that
name the server (killed mid-run, down from the start).
"""

from __future__ import annotations

import pytest

import ppl
from ppl import GenRequest
from ppl.algorithms import SMC
from ppl.backends import FunctionReward
from ppl.backends.openai import OpenAICompatible, ServerError


@pytest.fixture
def servers(openai_servers):
    """The session's two servers (tests/conftest.py)."""
    return openai_servers


@pytest.fixture
def client(servers):
    return OpenAICompatible([s.url for s in servers if s.process.poll() is None], retries=1, backoff=0.2)


@ppl.program
def steps_program(lm, question, reward_model):
    ctx = lm.chat(user=question)
    for step in ppl.steps(max=3):
        s = ppl.gen(lm, ctx, stop=["."], max_tokens=10, temperature=0.8)
        ctx += s.token_ids
        ppl.twist(ppl.reward(reward_model, question, step))
        if s.eos:
            break
    return lm.decode(ctx)


def test_prefix_affinity_keeps_each_problem_on_one_server(client):
    questions = [f"Question {i}: what is {i} plus {i}?" for i in range(6)]
    homes = {i: client.server_for(GenRequest((), 1, group=i)) for i in range(len(questions))}
    assert len(set(homes.values())) == 2, "the problems should spread over both servers"
    seen: dict = {}
    original = client._complete

    def spy(request):
        seen.setdefault(request.group, set()).add(client.server_for(request))
        return original(request)

    client._complete = spy
    zero = FunctionReward(lambda question, step: 0.0, name="zero")
    results = SMC(3).run(steps_program, [(client, q, zero) for q in questions], seed=0)
    assert sorted(seen) == list(range(len(questions)))
    assert all(servers == {homes[group]} for group, servers in seen.items())
    assert set(client.requests_per_server) == set(homes.values())
    assert all(not post.all_dead for post in results)


def test_a_server_killed_mid_run_is_a_clear_error_that_keeps_finished_problems(servers):
    client = OpenAICompatible([servers[1].url], retries=1, backoff=0.2, timeout=60)
    quick, slow = "Say yes.", "Write three short sentences about the sea."

    def kill_later(question, step):
        if question == slow and step == 1:
            servers[1].kill()
        return 0.0

    @ppl.program
    def program(lm, question, steps):
        ctx = lm.chat(user=question)
        for step in ppl.steps(max=steps):
            ctx += ppl.gen(lm, ctx, max_tokens=4, temperature=0.8).token_ids
            ppl.score(ppl.reward(killer, question, step))
        return lm.decode(ctx)

    killer = FunctionReward(kill_later, name="killer")
    with pytest.raises(ppl.EngineError) as caught:
        SMC(2).run(program, [(client, quick, 1), (client, slow, 3)], seed=0)
    assert servers[1].url in str(caught.value)
    assert "no answer" in str(caught.value)
    assert list(caught.value.completed) == [0]
    assert caught.value.completed[0].best()


def test_a_server_that_is_down_is_named():
    from servers import free_port

    url = f"http://127.0.0.1:{free_port()}"
    client = OpenAICompatible([url], retries=1, backoff=0.01, timeout=5)
    with pytest.raises(ServerError, match=f"server {url}: no answer on /v1/models after 2 attempts"):
        client.generate([GenRequest((1, 2, 3), max_tokens=2, seed=0)])
