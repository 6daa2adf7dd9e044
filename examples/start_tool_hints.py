"""START-style tool hints in Python: the twin of examples/start_tool_hints.tts.

Mid-reasoning, a hint to check the work with Python; the code the model writes runs in the
sandbox (``ppl.tool``) and its output or error goes back into the context.

Run:  python examples/start_tool_hints.py [--backend vllm]
"""

import sys

import ppl
from ppl.algorithms import ImportanceSampling
from ppl.app.models import load_model
from ppl.backends.sandbox import Sandbox
from ppl.backends.tools import PythonTool
from ppl.text import last_number

PROBLEM = "Zoe has 8 shells and gives away 2. How many are left?"


@ppl.program
def start(lm, py, problem):
    ctx = lm.chat(system="Solve the problem step by step. End with: The answer is N.", user=problem)
    r = ppl.gen(lm, ctx, stop=["\n\n"], max_tokens=64)
    ctx += r.token_ids
    ctx += lm.encode("\nWait, let me check this with Python.\n```python\n")
    code = ppl.gen(lm, ctx, stop=["```"], max_tokens=64)
    ctx += code.token_ids
    status, text = ppl.tool(py, code.text.replace("```", ""))
    output = text if status == "passed" else f"error ({status}): {text}"
    ctx += lm.encode(f"```\nOutput: {output}\n")
    f = ppl.gen(lm, ctx, stop=["\n\n"], max_tokens=64)
    return last_number(f.text)


def main(backend: str = "tabular"):
    lm = load_model("smollm2-135m-instruct", backend)
    py = PythonTool(Sandbox(time_limit=5, memory_limit_mb=256), name="py")
    post = ppl.infer(start, [(lm, py, PROBLEM)], ImportanceSampling(4), seed=0)[0]
    print(f"answers {post.values}; engine calls {post.diagnostics.engine_calls}")
    return post


if __name__ == "__main__":
    main(sys.argv[sys.argv.index("--backend") + 1] if "--backend" in sys.argv else "tabular")
