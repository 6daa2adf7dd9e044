"""A reward-tilted target with `twist` and `score`: sentences that mention cats.

The target is p_LM(y) · exp(β · r(y)) with r(y) = the number of times " cat" occurs. Each
step twists the particle by the reward so far (a look-ahead heuristic that guides
resampling and is divided back out at the next step); the end scores the final reward.
The twist changes which particles SMC keeps on the way, never the target — the SMC
estimate of log Z and of the tilted law match exact enumeration.

Run:  python examples/reward_tilted.py
"""

import ppl
from ppl.algorithms import SMC, ImportanceSampling, enumerate_program
from ppl.app.models import demo_lm

BETA = 1.5
LM = demo_lm("reward-tilted-demo")  # table in ppl/models.py, shared with the .tts twin


@ppl.program
def about_cats(lm, beta):
    """p_LM tilted by exp(β · number of cats), with the running count as a twist."""
    ctx, cats = (), 0
    for _ in ppl.steps(max=6):
        word = ppl.gen(lm, ctx, max_tokens=1)
        ctx += word.token_ids
        cats += word.text == " cat"
        if word.eos:
            break
        ppl.twist(beta * cats)
    ppl.score(beta * cats)
    return lm.decode(ctx)


def main():
    problem = [(LM, BETA)]
    smc = ppl.infer(
        about_cats, problem, SMC(particles=512, resample="systematic", ess_threshold=0.5), seed=0
    )[0]
    best_of_n = ppl.infer(about_cats, problem, ImportanceSampling(particles=512), seed=0)[0]
    exact = enumerate_program(about_cats, (LM, BETA))
    cats = lambda text: text.count(" cat")  # noqa: E731
    print(
        f"log Z: exact {exact.log_evidence:.4f}, SMC {smc.log_evidence:.4f}, IS {best_of_n.log_evidence:.4f}"
    )
    print(
        f"E[#cats]: exact {exact.expectation(cats):.3f}, SMC {smc.expectation(cats):.3f}, "
        f"IS {best_of_n.expectation(cats):.3f}"
    )
    print(f"best-of-N answer: {best_of_n.best()!r}; SMC sample: {smc.sample(3, seed=1)}")
    ess = ", ".join(f"{e:.0f}" for e in smc.diagnostics.ess)
    print(f"SMC ESS per step: {ess}; resampled {smc.diagnostics.resampling_events} times")
    return smc, best_of_n, exact


if __name__ == "__main__":
    main()
