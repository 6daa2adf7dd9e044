"""Retrieval with evidence reranking in Python: the twin of examples/retrieval_rerank.tts.

BM25 (``bm25s``) retrieves k passages of examples/corpus/facts.jsonl (``ppl.tool``); the LM
reranks them by its likelihood (``ppl.select``: evidence drawn ∝ the model's probability of
each passage after the question); the answer is written from that evidence.

Run:  python examples/retrieval_rerank.py [--backend vllm]
"""

import sys
from pathlib import Path

import ppl
from ppl.algorithms import ImportanceSampling
from ppl.app.models import load_model
from ppl.backends.tools import Retriever
from ppl.text import last_number

QUESTION = "How many days are in 2 weeks?"
CORPUS = Path(__file__).resolve().parent / "corpus" / "facts.jsonl"


@ppl.program
def retrieve_rerank(lm, docs, question):
    passages = ppl.tool(docs, question, 4)
    ask = lm.chat(system="Quote the fact that helps answer the question.", user=question)
    evidence = ppl.select(lm, ask, list(passages))
    prompt = lm.chat(
        system="Answer the question using the fact. End with: The answer is N.",
        user=f"Fact: {evidence}\nQuestion: {question}",
    )
    s = ppl.gen(lm, prompt, stop=["\n\n"], max_tokens=48)
    return last_number(s.text)


def main(backend: str = "tabular"):
    lm = load_model("smollm2-135m-instruct", backend)
    docs = Retriever.from_path(CORPUS)
    post = ppl.infer(retrieve_rerank, [(lm, docs, QUESTION)], ImportanceSampling(4), seed=0)[0]
    print(f"answers {post.values}; engine calls {post.diagnostics.engine_calls}")
    return post


if __name__ == "__main__":
    main(sys.argv[sys.argv.index("--backend") + 1] if "--backend" in sys.argv else "tabular")
