"""Tools a program calls as sites (``ppl.tool``): sandboxed Python, and retrieval from a local corpus.

Each is a batched, memoised model answering ``ToolRequest``s (``ppl.interfaces``) through
its ``call`` method, like a reward model: every particle that reached the tool in a round
goes in one call, a repeated request is answered from the memo, and ``usage`` counts them.
A tool never raises for one request: what went wrong is in that request's answer, so only
that particle is affected.

* ``PythonTool`` runs code in the sandbox (``ppl.backends.sandbox``: time and memory
  limits, no network, writes only in a fresh temporary folder). Its answer is
  ``(status, text)``: ``("passed", stdout)`` or, when the code failed or hit a limit,
  ``(status, the reason and the end of stderr)`` — START-style hints and program-of-thought
  read it as text.
* ``Retriever`` searches a corpus given to the run (a JSONL file of ``{"text": ...}`` lines,
  or a folder of ``.txt`` files) with ``bm25s``; its answer to ``(query, k)`` is the top-k
  documents' texts, best first — exactly what bm25s's own query returns.

    >>> from ppl.interfaces import ToolRequest
    >>> docs = Retriever(["a cat sat on the mat", "the sun is a star", "dogs bark"])
    >>> docs.call([ToolRequest(("where did the cat sit", 1)), ToolRequest(("star", 1))])
    [('a cat sat on the mat',), ('the sun is a star',)]
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from ppl.interfaces import ToolRequest, Usage

from .sandbox import Sandbox


class _Memo:
    """Answers by request arguments, shared by the calls of one tool object."""

    def __init__(self):
        self._answers: dict = {}
        self._lock = threading.Lock()

    def split(self, requests: Sequence[ToolRequest]) -> tuple[list, list[tuple]]:
        with self._lock:
            missing = list(dict.fromkeys(r.args for r in requests if r.args not in self._answers))
        return missing, [r.args for r in requests]

    def store(self, keys: list[tuple], answers: list) -> None:
        with self._lock:
            self._answers.update(zip(keys, answers))

    def get(self, key: tuple):
        with self._lock:
            return self._answers[key]


class PythonTool:
    """Python code run in the sandbox, one subprocess per distinct code, ``workers`` at a time."""

    def __init__(self, sandbox: Sandbox | None = None, *, workers: int = 2, name: str = "python"):
        self.sandbox = sandbox or Sandbox()
        self.workers = workers
        self.name = name
        self.usage = Usage()
        self._memo = _Memo()

    def check(self, args: tuple) -> str | None:
        """Why these arguments are not a call of this tool (checked in the particle), or None."""
        if len(args) != 1 or not isinstance(args[0], str):
            return f"{self.name}: a python tool call takes the code as one text, got {args!r}"
        return None

    def call(self, requests: Sequence[ToolRequest]) -> list[tuple[str, str]]:
        started = time.perf_counter()
        missing, keys = self._memo.split(requests)
        results = self.sandbox.run_many([args[0] for args in missing], workers=self.workers)
        self._memo.store(missing, [_answer(r) for r in results])
        self.usage.requests += len(missing)
        self.usage.record_call(len(requests), started)
        return [self._memo.get(k) for k in keys]


def _answer(result) -> tuple[str, str]:
    if result.passed:
        return "passed", result.stdout
    detail = "\n".join(part for part in (result.reason, result.stderr.strip()[-1000:]) if part)
    return result.status, detail or result.status


class Retriever:
    """BM25 retrieval (``bm25s``) over a fixed list of documents."""

    def __init__(self, documents: Sequence[str], *, name: str = "retriever", stopwords: str = "en"):
        import bm25s

        self.documents = [str(d) for d in documents]
        if not self.documents:
            raise ValueError(f"{name}: the corpus has no documents")
        self.name = name
        self.stopwords = stopwords
        self.usage = Usage()
        self._memo = _Memo()
        self._bm25s = bm25s
        self.index = bm25s.BM25()
        self.index.index(
            bm25s.tokenize(self.documents, stopwords=stopwords, show_progress=False), show_progress=False
        )

    @classmethod
    def from_path(cls, path: str | Path, **settings) -> Retriever:
        """A corpus from a JSONL file (a ``text`` field per line) or a folder of ``.txt`` files."""
        path = Path(path)
        if path.is_dir():
            files = sorted(path.glob("*.txt"))
            if not files:
                raise ValueError(f"{path}: the folder has no .txt files")
            return cls([f.read_text(encoding="utf-8") for f in files], name=path.name, **settings)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such corpus (a .jsonl file or a folder of .txt files)")
        documents = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                documents.append(record["text"] if isinstance(record, dict) else record)
            except (json.JSONDecodeError, KeyError):
                raise ValueError(
                    f'{path}:{number}: each line must be a JSON object with a "text" field'
                ) from None
        return cls(documents, name=path.stem, **settings)

    def search(self, queries: Sequence[str], k: int) -> list[tuple[int, ...]]:
        """The indices of the top-k documents of each query, best first (bm25s's own order)."""
        k = min(k, len(self.documents))
        tokens = self._bm25s.tokenize(
            list(queries), stopwords=self.stopwords, return_ids=False, show_progress=False
        )
        indices, _ = self.index.retrieve(tokens, k=k, show_progress=False)
        return [tuple(int(i) for i in row) for row in indices]

    def check(self, args: tuple) -> str | None:
        """Why these arguments are not a retrieval (checked in the particle), or None."""
        well_formed = len(args) == 2 and isinstance(args[0], str)
        if not well_formed or isinstance(args[1], bool) or not isinstance(args[1], int) or args[1] < 1:
            return f"{self.name}: a retrieval takes (query text, k >= 1), got {args!r}"
        return None

    def call(self, requests: Sequence[ToolRequest]) -> list[tuple[str, ...]]:
        started = time.perf_counter()
        missing, keys = self._memo.split(requests)
        by_k: dict[int, list[tuple]] = {}
        for args in missing:
            by_k.setdefault(args[1], []).append(args)
        for k, group in by_k.items():
            hits = self.search([query for query, _ in group], k)
            self._memo.store(group, [tuple(self.documents[i] for i in row) for row in hits])
        self.usage.requests += len(missing)
        self.usage.record_call(len(requests), started)
        return [self._memo.get(key) for key in keys]
