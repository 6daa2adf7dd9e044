"""Tools as sites: sandboxed Python and BM25 retrieval called from programs (``ppl.tool``,
``use py = python()``, ``use docs = retriever(path = ...)`` in .tts).

A sandbox limit hit inside a program (an endless loop, too much memory, a socket) marks only
that particle: its value says why (or a ``condition`` kills it with the reason), the others
and the run go on. Retrieval returns exactly the top-k of bm25s's own query. Every particle
that reaches a tool in a round goes in one call, and repeated calls are memoised.
"""

from __future__ import annotations

import json

import bm25s
import pytest

import ppl
from ppl.algorithms import ImportanceSampling
from ppl.app import load
from ppl.backends.sandbox import Sandbox
from ppl.backends.tabular import TabularLM
from ppl.backends.tools import PythonTool, Retriever

CODES = {
    "ok": "print(6 * 7)",
    "loop": "while True:\n    pass",
    "memory": "x = bytearray(8 * 1024 ** 3)\nprint(len(x))",
    "socket": "import socket\nsocket.create_connection(('127.0.0.1', 9))",
}

SOURCE = """version 0.1
use py = python(time_limit = 2, memory_mb = 256)

program hint(kind: number) -> text {
  let codes = [CODES]
  let out = py.run(codes[kind])
  condition py.passed(codes[kind]), "the code failed: " + out
  return out
}
"""


def tts_source() -> str:
    listing = ", ".join(json.dumps(code) for code in CODES.values())
    return SOURCE.replace("[CODES]", "[" + listing + "]")


def test_sandbox_limits_inside_a_program_mark_only_that_particle():
    module = load(tts_source())
    py = module.models["py"]
    results = ImportanceSampling(2).run(module.programs["hint"], [(i,) for i in range(len(CODES))], seed=0)
    ok, loop, memory, blocked = results
    assert [p.value for p in ok.particles] == ["42\n", "42\n"]
    assert ok.log_evidence == 0.0
    for post, status in [(loop, "timeout"), (memory, "memory"), (blocked, "blocked")]:
        assert post.all_dead
        assert all(
            reason.startswith(f"the code failed: error ({status}): ") for reason in post.diagnostics.deaths
        )
    # one call per tool site for every particle of every problem; each distinct code run once
    assert results.stats.batch_sizes[("py", "call")] == [2 * len(CODES)] * 2  # py.run, then py.passed
    assert py.usage.requests == len(CODES)


def test_a_tool_value_is_the_error_as_text():
    tool = PythonTool(Sandbox(time_limit=2))

    @ppl.program
    def run(code):
        return ppl.tool(tool, code)

    post = ImportanceSampling(1).run(run, [(CODES["ok"],), ("raise ValueError('nope')",)], seed=0)
    assert post[0].particles[0].value == ("passed", "42\n")
    status, text = post[1].particles[0].value
    assert status == "error" and "ValueError: nope" in text


def test_arguments_a_tool_refuses_kill_only_that_particle():
    docs = Retriever(["one doc", "two docs"])

    @ppl.program
    def search(k):
        return ppl.tool(docs, "doc", k)

    results = ImportanceSampling(1).run(search, [(1,), (0,)], seed=0)
    assert results[0].particles[0].value == ("one doc",) or len(results[0].particles[0].value) == 1
    assert results[1].all_dead
    assert results[1].diagnostics.deaths == [
        "ValueError: retriever: a retrieval takes (query text, k >= 1), got ('doc', 0)"
    ]


CORPUS = [
    "The cat sat on the mat in the sun.",
    "Dogs chase cats around the garden.",
    "The sun is a star at the centre of the solar system.",
    "Python is a programming language with a sandbox here.",
    "A mat is a small rug placed on a floor.",
    "Stars shine because of nuclear fusion in their cores.",
]
QUERIES = ["where does the cat sit", "why do stars shine", "what is a rug", "programming languages"]


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in CORPUS), encoding="utf-8")
    return path


def library_top_k(query: str, k: int) -> list[str]:
    """The top-k of bm25s's own index and query, written out here independently."""
    index = bm25s.BM25()
    index.index(bm25s.tokenize(CORPUS, stopwords="en", show_progress=False), show_progress=False)
    tokens = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)
    documents, _ = index.retrieve(tokens, corpus=CORPUS, k=k, show_progress=False)
    return list(documents[0])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_retrieval_in_a_program_returns_the_library_s_own_top_k(corpus, k, tmp_path):
    program = tmp_path / "rag.tts"
    program.write_text(
        'version 0.1\nuse docs = retriever(path = "corpus.jsonl")\n'
        f"program find(q: text) -> list[text] {{\n  return docs.search(q, k = {k})\n}}\n",
        encoding="utf-8",
    )
    module = load(program)  # the corpus path is read beside the file
    results = ImportanceSampling(2).run(module.programs["find"], [(q,) for q in QUERIES], seed=0)
    for query, post in zip(QUERIES, results):
        assert list(post.particles[0].value) == library_top_k(query, k)
    assert results.stats.calls[("corpus", "call")] == 1
    assert module.models["docs"].usage.requests == len(QUERIES)  # memoised: one per distinct query


def test_retrieval_from_a_folder_of_text_files(tmp_path):
    for i, text in enumerate(CORPUS):
        (tmp_path / f"{i:02d}.txt").write_text(text, encoding="utf-8")
    docs = Retriever.from_path(tmp_path)
    assert docs.documents == CORPUS
    assert list(docs.call([ppl.ToolRequest(("why do stars shine", 2))])[0]) == library_top_k(
        "why do stars shine", 2
    )


def test_a_corpus_that_cannot_be_read_is_a_positioned_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text"}\n', encoding="utf-8")
    program = tmp_path / "p.tts"
    program.write_text(
        'version 0.1\nuse docs = retriever(path = "bad.jsonl")\nprogram p() -> text {\n  return "a"\n}\n',
        encoding="utf-8",
    )
    with pytest.raises(ppl.PPLError) as caught:
        load(program)
    assert f'{program}:2:29: {bad}:2: each line must be a JSON object with a "text" field' in str(
        caught.value
    )
    program.write_text(program.read_text().replace("bad.jsonl", "missing.jsonl"), encoding="utf-8")
    with pytest.raises(ppl.PPLError, match="no such corpus"):
        load(program)


def test_retrieval_augmented_generation_on_the_tabular_lm(corpus, tmp_path):
    """Retrieve evidence, put it in the prompt, generate: one retrieval call, one generation call."""
    program = tmp_path / "rag.tts"
    program.write_text(
        'version 0.1\nuse docs = retriever(path = "corpus.jsonl")\nuse lm = model("rag-test")\n'
        "program answer(q: text) -> text {\n"
        '  let evidence = join(docs.search(q, k = 2), "\\n")\n'
        '  a ~ lm.gen(lm.chat(system = "Answer from the evidence.", user = "${evidence}\\n\\n${q}"), max_tokens = 8)\n'
        "  return a.text\n}\n",
        encoding="utf-8",
    )
    lm = TabularLM.random(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,\n"), order=1, seed=0)
    module = load(program, models={"lm": lm})
    results = ImportanceSampling(3).run(module.programs["answer"], [(q,) for q in QUERIES[:2]], seed=0)
    assert results.stats.calls[("corpus", "call")] == 1
    assert results.stats.calls[("tabular", "generate")] == 1
    assert all(p.status == "finished" for post in results for p in post.particles)
