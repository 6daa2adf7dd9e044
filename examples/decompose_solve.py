"""Decompose, solve, contract (Atom of Thoughts-like) in Python: the twin of
examples/decompose_solve.tts.

Subquestions from one generation (at most three kept), each solved in turn with the answers
so far (``solve_step``, a program called in place), the solved facts contracted into one
self-contained question, and that question answered.

Run:  python examples/decompose_solve.py [--backend vllm]
"""

import sys

import ppl
from ppl.algorithms import ImportanceSampling
from ppl.app.models import load_model
from ppl.text import last_number, split

PROBLEM = "Zoe has 8 shells and gives away 2. How many are left?"


@ppl.program
def solve_step(lm, problem, known, question):
    prompt = lm.chat(
        system="Answer the question in one short sentence, using what is known.",
        user=f"Problem: {problem}\nKnown:{known}\nQuestion: {question}",
    )
    a = ppl.gen(lm, prompt, stop=["\n"], max_tokens=32)
    return a.text.strip()


@ppl.program
def decompose_solve(lm, problem):
    ask = lm.chat(
        system="Break the problem into at most three short subquestions, one per line. Do not answer them.",
        user=problem,
    )
    plan = ppl.gen(lm, ask, stop=["\n\n"], max_tokens=48)
    known, solved = "", 0
    for line in split(plan.text, "\n"):
        question = line.strip()
        if question != "" and solved < 3:
            answer = solve_step(lm, problem, known, question)
            known += f"\n- {question} {answer}"
            solved += 1
    contract = lm.chat(
        system="Rewrite the problem as one self-contained question that uses the facts.",
        user=f"Problem: {problem}\nFacts:{known}",
    )
    c = ppl.gen(lm, contract, stop=["\n\n"], max_tokens=48)
    final = lm.chat(system="Solve the problem. End with: The answer is N.", user=f"{problem}\n{c.text}")
    s = ppl.gen(lm, final, stop=["\n\n"], max_tokens=64)
    return last_number(s.text)


def main(backend: str = "tabular"):
    lm = load_model("smollm2-135m-instruct", backend)
    post = ppl.infer(decompose_solve, [(lm, PROBLEM)], ImportanceSampling(2), seed=0)[0]
    print(f"answers {post.values}; engine calls {post.diagnostics.engine_calls}")
    return post


if __name__ == "__main__":
    main(sys.argv[sys.argv.index("--backend") + 1] if "--backend" in sys.argv else "tabular")
