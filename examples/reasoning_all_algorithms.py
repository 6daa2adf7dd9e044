"""One reasoning program under every interpreter: what each targets, what each returns.

A toy chain of thought on an exact demo LM: the LM claims a value for 2+3 (right half of
the time), may re-check, then answers (right a third of the time, whatever it claimed). A
process reward twists runs whose latest claim is right — it guides resampling, pruning and
search, and is divided back out at the next step — and an outcome verifier scores a right
final answer: the target is p_LM(y) · exp(3 · [answer right]).

* importance sampling, SMC, particle Gibbs and MH target that distribution π (their
  P(answer right) estimates the exact value, shown first);
* beam search and DVTS search for its mode: their answer is ``best()``, their weights are
  not a distribution over answers.

The .tts twin is examples/reasoning.tts (`tts run examples/reasoning.tts --input 5`).

Run:  python examples/reasoning_all_algorithms.py
"""

import ppl
from ppl.algorithms import DVTS, MH, SMC, BeamSearch, ImportanceSampling, ParticleGibbs, enumerate_program
from ppl.app.models import demo_lm

LM = demo_lm("reasoning-demo")  # table in ppl/models.py, shared with the .tts twin
ANSWER = "5"


@ppl.program
def solve(lm, answer):
    ctx, claim, last = (), "", ""
    for _ in ppl.steps(max=6):
        s = ppl.gen(lm, ctx, max_tokens=1)
        ctx += s.token_ids
        if "=" in s.text:
            claim = s.text
        if s.eos:
            break
        last = s.text
        if claim == " =" + answer:
            ppl.twist(1.5)  # process reward: the latest claim checks out
    if last == " " + answer:
        ppl.score(3.0)  # outcome verifier
    return last


INTERPRETERS = {
    "importance": ("π (best-of-N, voting)", ImportanceSampling(particles=64)),
    "smc": ("π (particle filtering)", SMC(particles=64, resample="systematic")),
    "particle_gibbs": ("π (MCMC, conditional SMC)", ParticleGibbs(particles=8, sweeps=40, burn=5)),
    "mh_suffix": ("π (MCMC over completions)", MH(chains=8, steps=25, burn=5)),
    "mh_independent": ("π (independence MH)", MH(chains=8, steps=25, burn=5, proposal="independent")),
    "beam": ("the mode", BeamSearch(beams=4, expand=4)),
    "dvts": ("the mode, diverse subtrees", DVTS(subtrees=4, expand=4)),
}


def right(value) -> bool:
    return value == " " + ANSWER


def main():
    exact = enumerate_program(solve, (LM, ANSWER))
    results = {"enumeration": exact}
    print(f"{'interpreter':<15} {'targets':<28} {'answer':>7} {'P(right)':>9} {'calls':>6} {'tokens':>7}")
    print(f"{'enumeration':<15} {'π exactly':<28} {exact.best()!r:>7} {exact.expectation(right):>9.3f}")
    for name, (target, algorithm) in INTERPRETERS.items():
        post = ppl.infer(solve, [(LM, ANSWER)], algorithm, seed=0)[0]
        results[name] = post
        answer = post.best() if name in ("beam", "dvts") else post.weighted_vote()
        share = f"{post.expectation(right):.3f}" if name not in ("beam", "dvts") else "-"
        d = post.diagnostics
        print(f"{name:<15} {target:<28} {answer!r:>7} {share:>9} {d.engine_calls:>6} {d.tokens_out:>7}")
    return results


if __name__ == "__main__":
    main()
