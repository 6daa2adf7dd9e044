"""Mixture-of-agents (Wang et al., 2024) in Python: the twin of examples/mixture_of_agents.tts.

Layers of proposers (one ``n``-site each: three samples from one engine request), each
reading every response of the layer before; then an aggregator synthesises the last layer.
Over particles, the final answers are voted on.

Run:  python examples/mixture_of_agents.py [--backend vllm]
"""

import sys

import ppl
from ppl.algorithms import ImportanceSampling
from ppl.app.models import load_model
from ppl.text import last_number

PROBLEM = "Zoe has 8 shells and gives away 2. How many are left?"


@ppl.program
def propose(lm, problem, references):
    prompt = lm.chat(system="Solve the problem. End with: The answer is N.", user=problem + references)
    return ppl.gen(lm, prompt, stop=["\n\n"], max_tokens=64, temperature=0.7, n=3)


@ppl.program
def mixture(lm, problem):
    references = ""
    for _ in range(2):
        responses = propose(lm, problem, references)
        references = "\n\nResponses of other assistants:"
        for i, r in enumerate(responses, start=1):
            references += f"\n{i}. {r.text}"
    prompt = lm.chat(
        system="Synthesise these responses into one correct answer. End with: The answer is N.",
        user=problem + references,
    )
    a = ppl.gen(lm, prompt, stop=["\n\n"], max_tokens=64, temperature=0.7)
    return last_number(a.text)


def main(backend: str = "tabular"):
    lm = load_model("smollm2-135m-instruct", backend)
    post = ppl.infer(mixture, [(lm, PROBLEM)], ImportanceSampling(4), seed=0)[0]
    print(f"majority answer {post.majority()!r}; engine calls {post.diagnostics.engine_calls}")
    return post


if __name__ == "__main__":
    main(sys.argv[sys.argv.index("--backend") + 1] if "--backend" in sys.argv else "tabular")
