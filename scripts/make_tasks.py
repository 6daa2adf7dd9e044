"""Generate the bundled task sets under examples/tasks/ (seeded: the same files every time).

    python scripts/make_tasks.py                  # rewrite examples/tasks/*.jsonl
    python scripts/make_tasks.py --out DIR --seed 0

Every line is one task: ``id``, ``input`` (the program's input text), ``reference`` (what
the checker compares with) and ``checker`` (a name in ``ppl.backends.verifiers.CHECKERS``),
plus ``level`` or ``kind`` for reading results by difficulty. Only ``random.Random(seed)``
is used, whose integer and choice methods are stable across Python versions.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

NAMES = ["Tom", "Ana", "Li", "Sara", "Omar", "Maya", "Ben", "Zoe", "Ivan", "Nia", "Raj", "Emma"]
THINGS = ["apples", "pencils", "books", "marbles", "stickers", "cookies", "cards", "shells", "coins", "eggs"]
WORDS = [
    "river",
    "lamp",
    "winter",
    "garden",
    "clock",
    "bridge",
    "cloud",
    "violin",
    "forest",
    "candle",
    "ocean",
    "stone",
]
TOPICS = [
    "the sea",
    "a city at night",
    "a cat",
    "breakfast",
    "rain",
    "a long journey",
    "friendship",
    "the moon",
]


def arithmetic(rng: random.Random, count_per_level: int = 12) -> list[dict]:
    """Word problems in four levels: one sum of one-digit numbers, phrased plainly; one sum or
    difference; one product or a sum of two-digit numbers; two steps. Answers are exact
    integers (math checker). Sized for the default model (SmolLM2-135M-Instruct) to solve
    some but not most: see examples/tasks/README.md for the measured solve rates."""
    tasks = []

    def level1():
        name, thing = rng.choice(NAMES), rng.choice(THINGS)
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        return (
            f"{name} has {a} {thing}. {name} gets {b} more {thing}. How many {thing} does {name} have now?",
            a + b,
        )

    def level2():
        name, thing = rng.choice(NAMES), rng.choice(THINGS)
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        if rng.random() < 0.5:
            return f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?", a + b
        a = a + b
        return f"{name} has {a} {thing} and gives away {b}. How many {thing} are left?", a - b

    def level3():
        name, thing = rng.choice(NAMES), rng.choice(THINGS)
        if rng.random() < 0.5:
            a, b = rng.randint(3, 9), rng.randint(3, 9)
            return (
                f"{name} has {a} boxes with {b} {thing} in each box. How many {thing} are there in total?",
                a * b,
            )
        a, b = rng.randint(12, 60), rng.randint(12, 40)
        return f"{name} collected {a} {thing} on Monday and {b} on Tuesday. How many {thing} in all?", a + b

    def level4():
        name, thing = rng.choice(NAMES), rng.choice(THINGS)
        a, b, c = rng.randint(3, 8), rng.randint(3, 8), rng.randint(2, 9)
        if rng.random() < 0.5:
            return (
                f"{name} buys {a} bags of {thing} with {b} in each bag, then gives {c} away. "
                f"How many {thing} does {name} have left?",
                a * b - c,
            )
        return (
            f"{name} has {a} {thing}. A friend gives {name} {b} more, and then {name} doubles the total. "
            f"How many {thing} does {name} have?",
            2 * (a + b),
        )

    for level, make in ((1, level1), (2, level2), (3, level3), (4, level4)):
        for _ in range(count_per_level):
            question, answer = make()
            tasks.append({"input": question, "reference": str(answer), "checker": "math", "level": level})
    order = list(range(len(tasks)))
    rng.shuffle(order)
    return [{"id": f"arith-{i:03d}", **tasks[j]} for i, j in enumerate(order)]


def constrained_writing(rng: random.Random, count_per_kind: int = 6) -> list[dict]:
    """Short writing tasks whose constraint a program can check: required words, an exact
    word count, a bullet list of n lines, a pattern (regex)."""
    tasks = []
    for _ in range(count_per_kind):
        topic, pair = rng.choice(TOPICS), rng.sample(WORDS, 2)
        tasks.append(
            {
                "input": f"Write one sentence about {topic} that uses the words '{pair[0]}' and '{pair[1]}'.",
                "reference": pair,
                "checker": "include_words",
                "kind": "include_words",
            }
        )
    for _ in range(count_per_kind):
        topic, n = rng.choice(TOPICS), rng.randint(3, 8)
        tasks.append(
            {
                "input": f"Describe {topic} in exactly {n} words. Reply with the {n} words only.",
                "reference": n,
                "checker": "word_count",
                "kind": "word_count",
            }
        )
    for _ in range(count_per_kind):
        topic, n = rng.choice(TOPICS), rng.randint(2, 4)
        tasks.append(
            {
                "input": f"List {n} facts about {topic} as a bullet list: {n} lines, each starting with '- '. Nothing else.",
                "reference": n,
                "checker": "bullets",
                "kind": "bullets",
            }
        )
    patterns = [
        ("Answer with one word in capital letters: what colour is the sky on a clear day?", r"[A-Z]+\.?"),
        ("Is water wet? Answer with Yes or No only.", r"(?i)(yes|no)\.?"),
        (
            "Ask me a question about {topic}. Reply with the question only, ending with a question mark.",
            r"[^\n?]+\?",
        ),
        ("Give a title for a story about {topic}, in double quotes and nothing else.", r'"[^"\n]+"'),
        ("Write a number between 1 and 100 and nothing else.", r"(100|[1-9][0-9]?)"),
        ("Write a sentence about {topic} in lowercase letters only.", r"[a-z ,']+\.?"),
    ]
    for _ in range(count_per_kind):
        template, pattern = rng.choice(patterns)
        tasks.append(
            {
                "input": template.format(topic=rng.choice(TOPICS)),
                "reference": pattern,
                "checker": "regex",
                "kind": "format",
            }
        )
    return [{"id": f"write-{i:03d}", **t} for i, t in enumerate(tasks)]


def write(path: Path, tasks: list[dict]) -> None:
    path.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in tasks), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "examples" / "tasks"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write(out / "arithmetic.jsonl", arithmetic(random.Random(args.seed)))
    write(out / "constrained_writing.jsonl", constrained_writing(random.Random(args.seed + 1)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
