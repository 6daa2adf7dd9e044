"""An Archon-style architecture (Saad-Falcon et al., 2024) in Python: the twin of
examples/archon.tts — generator (an n-site), critic (a called program per candidate),
ranker (an exact choice), fuser, and an LM-as-judge verifier weighing the fused answer.

Run:  python examples/archon.py [--backend vllm]
"""

import sys

import ppl
from ppl.algorithms import ImportanceSampling
from ppl.app.models import load_model
from ppl.backends.judge import Judge
from ppl.text import last_number

PROBLEM = "Zoe has 8 shells and gives away 2. How many are left?"


@ppl.program
def generate(lm, problem):
    prompt = lm.chat(system="Solve the problem. End with: The answer is N.", user=problem)
    return ppl.gen(lm, prompt, stop=["\n\n"], max_tokens=48, temperature=0.8, n=3)


@ppl.program
def critique(lm, problem, candidate):
    prompt = lm.chat(
        system="Point out the mistake in this answer in one sentence, or say it is right.",
        user=f"Question: {problem}\n\nAnswer: {candidate}",
    )
    return ppl.gen(lm, prompt, stop=["\n"], max_tokens=32).text


@ppl.program
def archon(lm, judge, problem):
    candidates = generate(lm, problem)
    listing, options = "", []
    for i, c in enumerate(candidates, start=1):
        note = critique(lm, problem, c.text)
        listing += f"\n\nCandidate {i}: {c.text}\nCritique: {note}"
        options.append(str(i))
    ask = lm.chat(
        system="Which candidate is best, given the critiques? Reply with its number.",
        user=f"Question: {problem}{listing}",
    )
    best = ppl.select(lm, ask + lm.encode("The best is Candidate "), options)
    fuse = lm.chat(
        system="Write one correct answer from the candidates and critiques. End with: The answer is N.",
        user=f"Question: {problem}{listing}\n\nThe best is Candidate {best}.",
    )
    f = ppl.gen(lm, fuse, stop=["\n\n"], max_tokens=48)
    ppl.score(2.0 * ppl.reward(judge, problem, f.text))
    return last_number(f.text)


def main(backend: str = "tabular"):
    lm = load_model("smollm2-135m-instruct", backend)
    judge = Judge(lm, "Is this answer correct? Answer Yes or No.", name="judge")
    post = ppl.infer(archon, [(lm, judge, PROBLEM)], ImportanceSampling(4), seed=0)[0]
    print(f"best answer {post.best()!r}; engine calls {post.diagnostics.engine_calls}")
    return post


if __name__ == "__main__":
    main(sys.argv[sys.argv.index("--backend") + 1] if "--backend" in sys.argv else "tabular")
