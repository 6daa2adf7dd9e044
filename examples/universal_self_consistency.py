"""Universal self-consistency (Chen et al., 2023) in Python: the twin of
examples/universal_self_consistency.tts.

Several responses from one ``n``-site; the LM itself picks the most consistent one, an
exact choice among the response numbers (``ppl.select``).

Run:  python examples/universal_self_consistency.py [--backend vllm]
"""

import sys

import ppl
from ppl.algorithms import ImportanceSampling
from ppl.app.models import load_model
from ppl.text import as_number, last_number

PROBLEM = "Zoe has 8 shells and gives away 2. How many are left?"


@ppl.program
def usc(lm, problem):
    prompt = lm.chat(system="Solve the problem. End with: The answer is N.", user=problem)
    xs = ppl.gen(lm, prompt, stop=["\n\n"], max_tokens=64, temperature=0.8, n=4)
    listing = "".join(f"\n\nResponse {i}: {x.text}" for i, x in enumerate(xs, start=1))
    options = [str(i) for i in range(1, len(xs) + 1)]
    ask = lm.chat(
        system="Which response is the most consistent with the others? Reply with its number.",
        user=f"Question: {problem}{listing}",
    )
    pick = ppl.select(lm, ask + lm.encode("The most consistent is Response "), options)
    return last_number(xs[as_number(pick) - 1].text)


def main(backend: str = "tabular"):
    lm = load_model("smollm2-135m-instruct", backend)
    post = ppl.infer(usc, [(lm, PROBLEM)], ImportanceSampling(2), seed=0)[0]
    print(f"answers {post.values}; engine calls {post.diagnostics.engine_calls}")
    return post


if __name__ == "__main__":
    main(sys.argv[sys.argv.index("--backend") + 1] if "--backend" in sys.argv else "tabular")
