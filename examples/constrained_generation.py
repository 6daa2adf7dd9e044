"""Constrained generation with `condition`: sentences from a tiny LM that avoid a word.

The program generates a sentence word by word (one step per word) and conditions on the
word " dog" never appearing. The target is the LM conditioned on that event, so the
particles that say " dog" die as soon as they do, and SMC resamples the survivors. The
exact answer is known here — the LM is a small table — so the example prints both.

Run:  python examples/constrained_generation.py
"""

import ppl
from ppl.algorithms import SMC, enumerate_program
from ppl.app.models import demo_lm

LM = demo_lm("constrained-generation-demo")  # table in ppl/models.py, shared with the .tts twin


@ppl.program
def without_dog(lm):
    """Generate up to 8 words; a sentence containing ' dog' has weight zero."""
    ctx = ()
    for _ in ppl.steps(max=8):
        word = ppl.gen(lm, ctx, max_tokens=1)
        ctx += word.token_ids
        ppl.condition(word.text != " dog", "said dog")
        if word.eos:
            break
    return lm.decode(ctx)


def main():
    posterior = ppl.infer(without_dog, [(LM,)], SMC(particles=256, resample="systematic"), seed=0)[0]
    exact = enumerate_program(without_dog, (LM,))
    print(f"P(no dog) exact {exact.log_evidence:.4f} (log), SMC estimate {posterior.log_evidence:.4f}")
    print("most likely sentences  (SMC weight | exact probability)")
    exact_law = exact.distribution()
    for sentence, weight in list(posterior.distribution().items())[:5]:
        print(f"  {sentence!r:40} {weight:.3f} | {exact_law.get(sentence, 0.0):.3f}")
    d = posterior.diagnostics
    print(
        f"{len(d.deaths)} particles died on the way; {d.resampling_events} resampling events; "
        f"{d.engine_calls} engine calls for {d.particles} particles; {d.tokens_out} tokens"
    )
    return posterior, exact


if __name__ == "__main__":
    main()
