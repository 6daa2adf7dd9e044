"""Constrained segments and sampling settings: what ``gen``'s target is when it has them.

A **constraint** (``gen(..., regex=, grammar=, json_schema=, choice=)``) is a language L of
texts. The segment's factor in the target is the LM conditioned on it,

    p_LM(x | context) · 1[text(x) ∈ L]       (normalised by the program's Z, not per site),

not the locally renormalised masked distribution that structured-output engines sample
from. A backend proposes from the masked distribution — at each token, the LM restricted
to the tokens after which the text can still be completed in L (and the end-of-sequence
token only where the text is in L) — and the site is weighted by the mass the mask
allowed, Π_t Σ_{v allowed} p(v | x_<t) = p(x) / q_masked(x) (``Segment.allowed_logmass``),
or, where the engine cannot report that mass, by a scoring call to the LM (p(x) against
the masked log-probability of the sample). docs/design.md, "Constrained generation".

Masks come from xgrammar — the library vLLM's structured outputs use — which tests each
token's bytes against the grammar: a token is allowed iff the text so far plus that token
is a prefix of a text in L, whatever the tokenisation (no canonical-tokenisation
shortcut), so the masked proposal covers every x with p(x) · 1[L] > 0.

**Sampling settings** (``top_k``, ``top_p``, ``min_p``) are part of the model too: the
target is the LM at the temperature, truncated as vLLM does it (temperature, then min-p,
then top-k, then top-p on the renormalised top-k) and renormalised (``truncate``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

KINDS = ("regex", "grammar", "json_schema", "choice")


def _xgrammar():
    try:
        import xgrammar
    except ImportError as error:  # pragma: no cover - xgrammar is a dependency
        raise ImportError(
            'constrained generation needs xgrammar: `pip install "ppl-tts[constrained]"` (vLLM installs it)'
        ) from error
    return xgrammar


def _ebnf_string(text: str) -> str:
    """``text`` as an EBNF string literal (the escaping vLLM's ``choice_as_grammar`` uses)."""
    escapes = {"\\": r"\\", '"': r"\"", "\n": r"\n", "\r": r"\r", "\t": r"\t"}
    out = []
    for ch in text:
        if ch in escapes:
            out.append(escapes[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@dataclass(frozen=True)
class Constraint:
    """A language for one segment's text: a regex, a context-free grammar (Lark syntax, or
    GBNF/EBNF when it uses ``::=``), a JSON schema (canonical JSON text) or a list of choices.

    Hashable and comparable, so requests that carry one can be memoised and grouped.
    """

    kind: str
    source: str

    @classmethod
    def of(cls, *, regex=None, grammar=None, json_schema=None, choice=None) -> Constraint | None:
        """The constraint given to ``gen`` (at most one kind), or None; a ValueError for a
        malformed one, naming what is wrong."""
        if regex is None and grammar is None and json_schema is None and choice is None:
            return None
        given = {k: v for k, v in zip(KINDS, (regex, grammar, json_schema, choice)) if v is not None}
        if len(given) > 1:
            raise ValueError(f"gen takes one constraint at a time, got {' and '.join(given)}")
        ((kind, value),) = given.items()
        if kind in ("regex", "grammar"):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{kind} must be a non-empty text, got {value!r}")
            source = value
        elif kind == "json_schema":
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as error:
                    raise ValueError(f"json_schema is not valid JSON: {error}") from None
            if not isinstance(value, dict):
                raise ValueError(f"json_schema must be a JSON object (a dict), got {type(value).__name__}")
            source = json.dumps(value, sort_keys=True)
        else:
            if isinstance(value, str) or not all(isinstance(c, str) for c in value):
                raise ValueError(f"choice must be a list of texts, got {value!r}")
            options = tuple(dict.fromkeys(value))
            if not options or any(not c for c in options):
                raise ValueError("choice needs at least one option, and no empty option")
            source = json.dumps(list(options))
        constraint = cls(kind, source)
        problem = constraint.problem()
        if problem:
            raise ValueError(problem)
        return constraint

    def __str__(self) -> str:
        shown = self.source if len(self.source) <= 60 else self.source[:57] + "..."
        return f"{self.kind} {shown!r}"

    # --- the grammar, as the mask library and the engines take it ------------------------

    def grammar(self):
        """The xgrammar ``Grammar`` of L (raises RuntimeError with xgrammar's positioned message)."""
        xgr = _xgrammar()
        if self.kind == "regex":
            return xgr.Grammar.from_regex(self.source)
        if self.kind == "json_schema":
            return xgr.Grammar.from_json_schema(self.source, any_whitespace=True)
        if self.kind == "choice":
            return xgr.Grammar.from_ebnf(
                "root ::= " + " | ".join(_ebnf_string(c) for c in json.loads(self.source))
            )
        if "::=" in self.source:
            return xgr.Grammar.from_ebnf(self.source)
        return xgr.Grammar.from_lark(self.source)

    def problem(self) -> str | None:
        """Why L cannot be built (a malformed regex, grammar or schema), or None."""
        try:
            self.grammar()
        except (RuntimeError, ValueError) as error:
            message = str(error).strip()
            # xgrammar prefixes C++ errors with "[time] file.cc:line: "; keep the message itself
            if message.startswith("[") and ".cc:" in message:
                message = message.split(": ", 1)[-1]
            return f"bad {self.kind.replace('_', ' ')}: {message}"
        return None

    def structured_outputs(self) -> dict:
        """vLLM's ``StructuredOutputsParams`` keywords for exactly this language (the same
        xgrammar grammar the tabular backend masks with: choices and Lark grammars go as
        their EBNF, so no backend heuristic decides the syntax)."""
        if self.kind == "regex":
            return {"regex": self.source}
        if self.kind == "json_schema":
            return {"json": self.source}
        return {"grammar": str(self.grammar())}

    def accepts(self, text: str) -> bool:
        """Whether ``text`` is in L (a whole text, not a prefix)."""
        xgr = _xgrammar()
        info = xgr.TokenizerInfo(["<eos>"], vocab_type=xgr.VocabType.RAW, vocab_size=1, stop_token_ids=[0])
        compiled = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False).compile_grammar(
            self.grammar()
        )
        matcher = xgr.GrammarMatcher(compiled)
        return bool(text == "" or matcher.accept_string(text)) and bool(matcher.accept_token(0))


class Masker:
    """Token masks of constraints for one vocabulary (a tabular LM's): ``allowed(c, prefix)``
    is the boolean mask over token ids (EOS included) after the token ids ``prefix``.

    Compiled grammars are kept per constraint on this object (one per backend)."""

    def __init__(self, tokens: list[str], eos_token_id: int):
        xgr = _xgrammar()
        vocab = list(tokens)
        vocab.insert(eos_token_id, "<eos>")
        self.size = len(vocab)
        self.eos_token_id = eos_token_id
        self._info = xgr.TokenizerInfo(
            vocab, vocab_type=xgr.VocabType.RAW, vocab_size=self.size, stop_token_ids=[eos_token_id]
        )
        self._compiler = xgr.GrammarCompiler(self._info, max_threads=1, cache_enabled=False)
        self._compiled: dict[Constraint, object] = {}

    def matcher(self, constraint: Constraint, prefix=()):
        """An xgrammar matcher that has read ``prefix``, or None if ``prefix`` is outside L's prefixes."""
        xgr = _xgrammar()
        compiled = self._compiled.get(constraint)
        if compiled is None:
            compiled = self._compiled[constraint] = self._compiler.compile_grammar(constraint.grammar())
        matcher = xgr.GrammarMatcher(compiled)
        for token in prefix:
            if not matcher.accept_token(int(token)):
                return None
        return matcher

    def allowed(self, matcher) -> np.ndarray:
        """The mask after what ``matcher`` has read: True where a token keeps the text completable."""
        xgr = _xgrammar()
        bitmask = xgr.allocate_token_bitmask(1, self.size)
        matcher.fill_next_token_bitmask(bitmask)
        words = bitmask[0].numpy().astype(np.uint32)
        ids = np.arange(self.size)
        return ((words[ids // 32] >> (ids % 32).astype(np.uint32)) & 1).astype(bool)


def truncate(logprobs: np.ndarray, *, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0) -> np.ndarray:
    """Log-probabilities (already at the temperature) truncated as vLLM samples them and
    renormalised: min-p (drop tokens below ``min_p`` × the most likely one's probability),
    then top-k (keep the ``top_k`` likeliest, ties at the k-th kept), then top-p on the
    renormalised rest (drop, from the least likely up, tokens whose cumulative probability
    stays ≤ 1 − ``top_p``; the likeliest is always kept). ``0``, ``1``, ``0`` are off."""
    if top_k <= 0 and top_p >= 1.0 and min_p <= 0.0:
        return logprobs
    lp = np.array(logprobs, dtype=np.float64)
    if min_p > 0.0:
        lp[lp < np.max(lp) + math.log(min_p)] = -np.inf
    if top_k > 0 and top_k < np.sum(np.isfinite(lp)):
        kth = np.sort(lp)[-top_k]
        lp[lp < kth] = -np.inf
    lp = lp - _logsumexp(lp)
    if top_p < 1.0:
        order = np.argsort(lp, kind="stable")
        cumulative = np.cumsum(np.exp(lp[order]))
        drop = cumulative <= 1.0 - top_p
        drop[-1] = False
        lp[order[drop]] = -np.inf
        lp = lp - _logsumexp(lp)
    return lp


def _logsumexp(x: np.ndarray) -> float:
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return -math.inf
    top = float(np.max(finite))
    return top + math.log(float(np.sum(np.exp(finite - top))))


def log_mass(logprobs: np.ndarray, allowed: np.ndarray) -> float:
    """log Σ_{allowed} p: the probability mass a mask lets through (−∞ when none)."""
    return _logsumexp(np.where(allowed, logprobs, -np.inf))
