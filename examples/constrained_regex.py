"""Constrained generation with a regex: the LM conditioned on its sentence matching a pattern.

``ppl.gen(..., regex=...)`` targets p(x) · 1[x matches] — the LM conditioned on the
pattern. The segment is proposed from the LM masked to the pattern and weighted by the
probability mass the mask allowed, token by token; the LM is a small table here, so the
exact answer is printed beside SMC's. Masking alone (no weights) would sample another
distribution: the masked one, renormalised at every token.

Run:  python examples/constrained_regex.py
"""

import ppl
from ppl.algorithms import SMC, enumerate_program
from ppl.app.models import demo_lm

LM = demo_lm("constrained-generation-demo")  # table in ppl/models.py, shared with the .tts twin
PATTERN = "( the| a) cat (sat|ran)( on( the| a) (cat|dog|mat))?"


@ppl.program
def cat_sentence(lm):
    """One sentence of at most 8 words that matches PATTERN."""
    s = ppl.gen(lm, (), max_tokens=8, regex=PATTERN)
    return s.text


def main():
    posterior = ppl.infer(cat_sentence, [(LM,)], SMC(particles=64), seed=0)[0]
    exact = enumerate_program(cat_sentence, (LM,))
    print(f"P(matches) exact {exact.log_evidence:.4f} (log), SMC estimate {posterior.log_evidence:.4f}")
    print("most likely sentences  (SMC weight | exact probability)")
    exact_law = exact.distribution()
    for sentence, weight in list(posterior.distribution().items())[:5]:
        print(f"  {sentence!r:40} {weight:.3f} | {exact_law.get(sentence, 0.0):.3f}")
    return posterior, exact


if __name__ == "__main__":
    main()
