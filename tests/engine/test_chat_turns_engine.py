"""Multi-turn chat prompts on the embedded default model: the model's own chat template over
system, user and assistant turns (``HFTokenizer.chat_turns``), read without starting vLLM."""

from __future__ import annotations

from ppl.app import load
from ppl.backends.vllm import VLLM


def test_chat_turns_is_the_model_s_own_template_over_every_turn():
    lm = VLLM()  # the tokenizer only: no engine is started
    turns = (("system", "Be brief."), ("user", "What is 2 + 2?"), ("assistant", "4."), ("user", "And 3 + 3?"))
    messages = [{"role": r, "content": t} for r, t in turns]
    expected = lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = lm.chat_turns(turns)
    assert lm.decode(ids) == expected
    assert ids[: len(lm.chat(system="Be brief.", user="What is 2 + 2?"))] == lm.chat(
        system="Be brief.", user="What is 2 + 2?"
    )
    module = load(
        'version 0.1\nuse lm = model("smollm2-135m-instruct")\n'
        "program p(q: text) -> tokens {\n"
        '  return lm.chat_turns([system("Be brief."), user(q), assistant("4."), user("And 3 + 3?")])\n}\n',
        models={"lm": lm},
    )
    assert module.programs["p"]("What is 2 + 2?") == ids
