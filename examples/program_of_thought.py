"""Program-of-thought with verification in Python: the twin of examples/program_of_thought.tts.

The model writes a program, the sandbox runs it (``ppl.tool`` with a ``PythonTool``), and an
independent chain of thought must agree with the program's answer to be weighted up.

Run:  python examples/program_of_thought.py [--backend vllm]
"""

import sys

import ppl
from ppl.algorithms import ImportanceSampling
from ppl.app.models import load_model
from ppl.backends.sandbox import Sandbox
from ppl.backends.tools import PythonTool
from ppl.text import extract, last_number

PROBLEM = "Zoe has 8 shells and gives away 2. How many are left?"


@ppl.program
def pot(lm, py, problem):
    prompt = lm.chat(
        system="Write a short Python program that prints the answer. Reply with the code only.", user=problem
    )
    code = ppl.gen(lm, prompt, stop=["\n\n\n"], max_tokens=96)
    source = extract(code.text, "```(?:python)?\n([\\s\\S]*?)```") or code.text
    status, text = ppl.tool(py, source)
    output = text if status == "passed" else f"error ({status}): {text}"
    ppl.condition(ppl.tool(py, source)[0] == "passed", "the program failed: " + output)
    answer = last_number(output)
    ppl.condition(answer != "", "the program printed no number")
    check = lm.chat(system="Solve the problem. End with: The answer is N.", user=problem)
    s = ppl.gen(lm, check, stop=["\n\n"], max_tokens=64)
    if last_number(s.text) == answer:
        ppl.score(1.0)
    return answer


def main(backend: str = "tabular"):
    lm = load_model("smollm2-135m-instruct", backend)
    py = PythonTool(Sandbox(time_limit=5, memory_limit_mb=256), name="py")
    post = ppl.infer(pot, [(lm, py, PROBLEM)], ImportanceSampling(4), seed=0)[0]
    reasons = sorted(set(post.diagnostics.deaths))[:2]
    print(f"answers {post.values}; dead {post.diagnostics.dead}: {reasons}")
    return post


if __name__ == "__main__":
    main(sys.argv[sys.argv.index("--backend") + 1] if "--backend" in sys.argv else "tabular")
