"""Plan, verify, select in Python: the twin of examples/plan_verify_select.tts.

A nested run (``ppl.nested``) drafts several plans, each weighed by an LM-as-judge; the
best-weighted plan is followed to an answer. The plans' weights choose a plan; they never
weigh the outer particle.

Run:  python examples/plan_verify_select.py [--backend vllm]
"""

import sys

import ppl
from ppl.algorithms import ImportanceSampling
from ppl.app.models import load_model
from ppl.backends.judge import Judge
from ppl.text import last_number

PROBLEM = "Zoe has 8 shells and gives away 2. How many are left?"


@ppl.program
def plan(lm, judge, problem):
    prompt = lm.chat(
        system="Write a short numbered plan for solving the problem. Do not solve it.", user=problem
    )
    p = ppl.gen(lm, prompt, stop=["\n\n"], max_tokens=48)
    ppl.score(ppl.reward(judge, problem, p.text))
    return p.text


@ppl.program
def plan_verify_select(lm, judge, problem):
    plans = ppl.nested(plan, (lm, judge, problem), ImportanceSampling(3))
    chosen = plans.best()
    prompt = lm.chat(
        system="Follow the plan to solve the problem. End with: The answer is N.",
        user=f"{problem}\n\nPlan:\n{chosen}",
    )
    s = ppl.gen(lm, prompt, stop=["\n\n"], max_tokens=64)
    return last_number(s.text)


def main(backend: str = "tabular"):
    lm = load_model("smollm2-135m-instruct", backend)
    judge = Judge(lm, "Is this plan correct and complete? Answer Yes or No.", name="judge")
    post = ppl.infer(plan_verify_select, [(lm, judge, PROBLEM)], ImportanceSampling(2), seed=0)[0]
    print(f"answers {post.values}; engine calls {post.diagnostics.engine_calls}")
    return post


if __name__ == "__main__":
    main(sys.argv[sys.argv.index("--backend") + 1] if "--backend" in sys.argv else "tabular")
