"""Self-refine (Madaan et al., 2023) in Python: the twin of examples/self_refine.tts.

Draft, feedback, corrected answer — a multi-turn chat in the model's own template
(``lm.chat_turns``), two rounds.

Run:  python examples/self_refine.py [--backend vllm]
"""

import sys

import ppl
from ppl.algorithms import ImportanceSampling
from ppl.app.models import load_model
from ppl.text import last_number

PROBLEM = "Zoe has 8 shells and gives away 2. How many are left?"


@ppl.program
def self_refine(lm, problem):
    turns = [("system", "Solve the problem step by step. End with: The answer is N."), ("user", problem)]
    d = ppl.gen(lm, lm.chat_turns(turns), stop=["\n\n"], max_tokens=64)
    answer = d.text
    for _ in range(2):
        turns += [("assistant", answer), ("user", "Is any step wrong? Give brief feedback.")]
        f = ppl.gen(lm, lm.chat_turns(turns), stop=["\n\n"], max_tokens=48)
        turns += [
            ("assistant", f.text),
            ("user", "Now write the corrected solution. End with: The answer is N."),
        ]
        r = ppl.gen(lm, lm.chat_turns(turns), stop=["\n\n"], max_tokens=64)
        answer = r.text
    return last_number(answer)


def main(backend: str = "tabular"):
    lm = load_model("smollm2-135m-instruct", backend)
    post = ppl.infer(self_refine, [(lm, PROBLEM)], ImportanceSampling(4), seed=0)[0]
    print(f"majority answer {post.majority()!r}; engine calls {post.diagnostics.engine_calls}")
    return post


if __name__ == "__main__":
    main(sys.argv[sys.argv.index("--backend") + 1] if "--backend" in sys.argv else "tabular")
