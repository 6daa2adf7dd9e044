"""Process reward models served by vLLM's pooling runner: every step of a batch in one call.

``PoolingPRM(model)`` is a step scorer for ``ppl.backends.prm.ProcessReward``. It lays the
problem and the steps out as one token sequence — the chat prompt of the problem, then each
step followed by the format's *separator* — and reads one two-way classification at the last
token of every separator: log r_t = log softmax(logits)[positive]. One ``LLM.encode`` call
with the ``token_classify`` task answers a whole batch of (problem, steps) items.

Two kinds of model:

* **A trained PRM** whose architecture vLLM serves as a token classifier, e.g.
  Qwen2.5-Math-PRM-7B (``Qwen2ForProcessRewardModel``): ``QWEN_MATH_PRM`` joins the steps
  with the special token ``<extra_0>``, which vLLM's ``STEP`` pooling finds, so the engine
  returns exactly one row per step.
* **Any causal LM** (``...ForCausalLM``, e.g. the embedded SmolLM2): vLLM converts it into a
  classifier whose two labels are the LM-head rows of "No" and "Yes"
  (``classifier_from_token``), and ``verdict_format(question)`` puts the question after
  each step: r_t = P(Yes) / (P(Yes) + P(No)) for the next token there. With no step tag the
  engine returns every position's row and the verdict rows are picked out here.

The layout is causal, so scoring steps 1..T also scores every prefix: ``ProcessReward``
memoises them all. A sequence longer than the engine's context is an error naming the item.
Like ``ppl.backends.vllm.VLLM``, the engine starts on the first call; on CPUs create it
under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ppl.posterior import logsumexp

from .embedded import DEFAULT_MODEL
from .prm import DEFAULT_QUESTION, Item
from .vllm import VLLMEngine, _import_vllm


@dataclass(frozen=True)
class PRMFormat:
    """How a PRM reads (problem, steps), and which classifier label means "correct".

    ``separator`` follows every step (its last token is where the verdict is read);
    ``tagged``: that last token is a special token that appears nowhere else, which vLLM's
    STEP pooling then selects by itself (``<extra_0>`` for Qwen2.5-Math-PRM); ``labels`` are the tokens a causal LM is converted
    with (its classifier's rows), ignored for a trained PRM; ``positive`` indexes the label
    that means "correct"."""

    name: str
    system: str
    separator: str
    tagged: bool = False
    labels: tuple[str, ...] = ("No", "Yes")
    positive: int = 1


QWEN_MATH_PRM = PRMFormat(
    "qwen2.5-math-prm",
    system="Please reason step by step, and put your final answer within \\boxed{}.",
    separator="<extra_0>",
    tagged=True,
)


def verdict_format(question: str = DEFAULT_QUESTION) -> PRMFormat:
    """A causal LM asked ``question`` after every step; the verdict is its next token."""
    return PRMFormat(
        "verdict",
        system="Solve the problem step by step. After each step, say whether it is correct.",
        separator=f"\n\n{question}\n",
    )


def architecture(path) -> str:
    """The model folder's architecture (``config.json``'s first ``architectures`` entry)."""
    config = json.loads((path / "config.json").read_text())
    names = config.get("architectures") or []
    if not names:
        raise ValueError(f"{path}/config.json names no architecture")
    return names[0]


class PoolingPRM(VLLMEngine):
    """Step verdicts from a vLLM pooling engine (see the module docstring).

    ``model``: an embedded model's name (default: SmolLM2-135M-Instruct, converted into a
    Yes/No step classifier) or a Hugging Face folder. ``format``: how steps are laid out;
    by default ``QWEN_MATH_PRM`` for ``Qwen2ForProcessRewardModel`` and ``verdict_format()``
    for a causal LM. Other keyword arguments are engine settings, as for ``VLLM``.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, format: PRMFormat | None = None, **settings):
        super().__init__(model, **settings)
        self._format = format
        self.name = f"prm({self.name})"

    @property
    def format(self) -> PRMFormat:
        if self._format is None:
            arch = architecture(self.path)
            if arch == "Qwen2ForProcessRewardModel":
                self._format = QWEN_MATH_PRM
            elif arch.endswith("ForCausalLM"):
                self._format = verdict_format()
            else:
                raise ValueError(
                    f"{self.name}: no known step format for a {arch}; pass format=PRMFormat(...) "
                    "(the separator after each step, and which label means correct)"
                )
        return self._format

    def converted(self) -> bool:
        """Whether the model is a causal LM that vLLM converts into a step classifier."""
        return architecture(self.path).endswith("ForCausalLM")

    def engine_arguments(self) -> dict:
        pooler = {"task": "token_classify", "tok_pooling_type": "STEP"}
        if not self.converted():
            return {"runner": "pooling", "pooler_config": pooler}
        return {
            "runner": "pooling",
            "convert": "classify",
            "hf_overrides": {
                "classifier_from_token": list(self.format.labels),
                "method": "no_post_processing",
            },
            "pooler_config": pooler,
        }

    # --- laying the steps out ------------------------------------------------------------------

    def tag_id(self) -> int | None:
        """The id of the special token that ends the separator, when the format is tagged."""
        if not self.format.tagged:
            return None
        tag = self.encode(self.format.separator)[-1]
        special = set(self.tokenizer.all_special_ids) | set(self.tokenizer.get_added_vocab().values())
        if tag not in special:
            raise ValueError(
                f"{self.name}: a tagged format's separator must end with a special token of the "
                f"model's vocabulary; {self.format.separator!r} ends with {self.decode([tag])!r}"
            )
        return tag

    def layout(self, problem: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """The token ids of (problem, steps) and the position of each step's verdict."""
        ids = list(self.chat(system=self.format.system, user=problem))
        separator = list(self.encode(self.format.separator))
        positions = []
        for step in steps:
            ids += list(self.encode(step.strip())) + separator
            positions.append(len(ids) - 1)
        tag = self.tag_id()
        if tag is not None and ids.count(tag) != len(positions):
            raise ValueError(
                f"{self.name}: the text of a step contains the step tag {self.format.separator!r}, "
                "so the steps cannot be told apart"
            )
        limit = self.engine_settings["max_model_len"]
        if len(ids) > limit:
            raise ValueError(
                f"{self.name}: problem {problem[:40]!r} with {len(steps)} steps is {len(ids)} tokens, "
                f"longer than the engine's context ({limit}); raise max_model_len or shorten the steps"
            )
        return ids, positions

    # --- the batched call -------------------------------------------------------------------------

    def score(self, items: Sequence[Item], final_only: bool = False) -> list[list[float]]:
        """log r_t for every step of every item (only the last step's with ``final_only``)."""
        vllm = _import_vllm()
        laid_out = [self.layout(problem, steps) for problem, steps in items]
        engine = self.engine
        started = time.perf_counter()
        params = vllm.PoolingParams(use_activation=False, step_tag_id=self.tag_id())
        outputs = engine.encode(
            [{"prompt_token_ids": ids} for ids, _ in laid_out],
            params,
            pooling_task="token_classify",
            use_tqdm=False,
        )
        out = []
        for (ids, positions), output in zip(laid_out, outputs):
            rows = output.outputs.data.float().tolist()
            if self.format.tagged:
                picked = rows  # STEP pooling: one row per step tag
            elif len(rows) == len(ids):
                picked = [rows[p] for p in positions]
            else:
                picked = None
            if picked is None or len(picked) != len(positions):
                raise RuntimeError(
                    f"{self.name}: the engine returned {len(rows)} rows for {len(positions)} steps "
                    f"({len(ids)} tokens)"
                )
            logs = [row[self.format.positive] - logsumexp(row) for row in picked]
            out.append(logs[-1:] if final_only else logs)
        self.usage.requests += len(items)
        self.usage.prompt_tokens += sum(len(ids) for ids, _ in laid_out)
        self.usage.record_call(len(items), started)
        return out
