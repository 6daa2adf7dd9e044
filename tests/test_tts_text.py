"""Prompts and text in .tts: string interpolation, split / strip / join / replace, regular
expressions, the last number, number parsing, multi-turn chat prompts, and the checkers of
``tts eval`` as rewards inside programs (one implementation: ``ppl.backends.verifiers``)."""

from __future__ import annotations

import pytest

import ppl
from ppl.algorithms import ImportanceSampling, enumerate_program
from ppl.app import load
from ppl.backends import verifiers
from ppl.backends.tabular import TabularLM
from ppl.grammar import TtsError

LM = TabularLM.random(["a", "b", " "], order=1, seed=0)
HEADER = 'version 0.1\nuse lm = model("text-test")\n'


def run(body: str, *args, returns: str = "text"):
    """Run a one-program file directly (its sites need no randomness unless it generates)."""
    params = ", ".join(f"x{i}: {t}" for i, t in enumerate(("text",) * len(args)))
    module = load(HEADER + f"program p({params}) -> {returns} {{\n{body}\n}}\n", models={"lm": LM})
    with ppl.seed(rng_seed=0):
        return module.programs["p"](*args)


def messages(source: str) -> list[str]:
    with pytest.raises(TtsError) as caught:
        load(source, models={"lm": LM})
    return [f"{d.position}: {d.message}" for d in caught.value.diagnostics]


@pytest.mark.parametrize(
    "body, expected",
    [
        ('return "n = ${x0}!"', "n = 7!"),
        ('let k = 3\n  return "${k} and ${x0} and ${k}"', "3 and 7 and 3"),
        ('return "\\${x0} stays"', "${x0} stays"),
        ('let b = 1 < 2\n  return "${b}"', "true"),
        ('return strip("  a b \\n")', "a b"),
        ('return join(split(" a  b c ", ""), "+")', "a+b+c"),
        ('return join(split("a,b,,c", ","), "|")', "a|b||c"),
        ('return replace("a-b-c", "-", "")', "abc"),
        ('return lower("AbC")', "abc"),
        ('return extract("x = 12, y = 30", "y = (\\\\d+)")', "30"),
        ('return extract("no digits", "\\\\d+")', ""),
        ('return join(extract_all("1a22b333", "\\\\d+"), ",")', "1,22,333"),
        ('return last_number("so 3 + 4 = 7, then 1,250.5 total")', "1250.5"),
        ('return last_number("the answer is -12.")', "-12"),
        ('return last_number("none")', ""),
        ('return text(number(" 1,234 ") + 1)', "1235"),
        ('return text(number("2.5e1"))', "25.0"),
        ('return text(matches("abc", "^a.c$"))', "true"),
        ('let t = ""\n  for i in range(3) { t += text(i) }\n  return t', "012"),
    ],
)
def test_text_functions(body, expected):
    assert run(body, "7") == expected


def test_a_field_in_an_interpolation():
    module = load(
        HEADER + 'program p() -> text {\n  s ~ lm.gen(lm.encode("a"), max_tokens = 2)\n'
        '  return "got [${s.text}] (${s.finish_reason})"\n}\n',
        models={"lm": LM},
    )
    exact = enumerate_program(module.programs["p"], ())
    for value in exact.distribution():
        assert value.startswith("got [") and value.endswith(")")
    assert len(exact.distribution()) > 3


def test_a_number_that_is_not_one_kills_only_its_particle():
    module = load(
        HEADER + 'program p() -> number {\n  s ~ lm.gen(lm.encode("a"), max_tokens = 2)\n'
        "  return number(s)\n}\n",
        models={"lm": LM},
    )
    post = ImportanceSampling(8).run(module.programs["p"], [()], seed=0)[0]
    assert post.all_dead
    assert post.diagnostics.deaths[0].startswith("TtsRuntimeError: <input>:5:10: cannot read a number from ")


def test_a_bad_regular_expression_is_a_clear_error():
    with pytest.raises(
        ppl.PPLError, match=r"<input>:4:8: bad regular expression '\(': missing \), unterminated subpattern"
    ):
        run('return extract("a", "(")')


@pytest.mark.parametrize(
    "body, expected",
    [
        ('return "${x0 + 1}"', "<input>:4:11: ${x0 + 1} in a string: inside ${...} write a name or a field"),
        ('return "${x0"', "<input>:4:11: an unclosed ${ in a string"),
        ('return "${nothing}"', "<input>:4:13: unknown name 'nothing'"),
        ('let m = lm\n  return "${m}"', "<input>:5:13: cannot put a model into a string"),
    ],
)
def test_interpolation_errors(body, expected):
    found = messages(HEADER + f"program p(x0: number) -> text {{\n  {body}\n}}\n")
    assert any(m.startswith(expected) for m in found), found


def test_interpolating_something_that_is_not_text():
    found = messages(HEADER + 'program p() -> text {\n  return "${lm}"\n}\n')
    assert found == ["<input>:4:13: cannot put a model into a string"]


def test_chat_turns_on_the_tabular_lm_is_the_texts_in_order():
    ids = run(
        'return lm.chat_turns([system("a"), user(x0), assistant("b"), user(" ")])', "ab", returns="tokens"
    )
    assert ids == LM.encode("a" + "ab" + "b" + " ")


def test_chat_turns_needs_a_model_with_a_template():
    class Plain(TabularLM):
        chat_turns = None

    plain = Plain(LM.vocab, {(): [0.0] * 4}, order=0, name="plain")
    module = load(
        HEADER + 'program p() -> tokens {\n  return lm.chat_turns([user("a")])\n}\n', models={"lm": plain}
    )
    with pytest.raises(ppl.PPLError, match="<input>:4:10: the model 'plain' has no multi-turn chat template"):
        module.programs["p"]()


CASES = [
    ("math", "so it is \\boxed{42}", "42"),
    ("math", "41", "42"),
    ("exact", " Paris ", "paris"),
    ("regex", "abc123", "[a-z]+\\d+"),
    ("include_words", "A red fox.", ("fox", "red")),
    ("include_words", "A red fox.", ("dog",)),
    ("word_count", "three small words", 3),
    ("bullets", "- a\n- b", 2),
]


@pytest.mark.parametrize("name, answer, reference", CASES)
def test_verifiers_in_programs_are_the_checkers_of_tts_eval(name, answer, reference):
    literal = {
        str: lambda r: '"' + r.replace("\\", "\\\\") + '"',
        int: str,
        tuple: lambda r: "[" + ", ".join(f'"{w}"' for w in r) + "]",
    }[type(reference)](reference)
    answer_literal = answer.replace("\\", "\\\\").replace("\n", "\\n")
    source = (
        f'version 0.1\nuse v = verifier("{name}")\n'
        f'program p() -> number {{\n  let ok = v.check("{answer_literal}", {literal})\n'
        f'  score v.reward("{answer_literal}", {literal})\n'
        f"  if ok {{ return 1 }}\n  return 0\n}}\n"
    )
    module = load(source)
    expected = verifiers.check(name, answer, reference)
    post = enumerate_program(module.programs["p"], ())
    assert post.best() == int(expected)
    assert post.log_evidence == (1.0 if expected else 0.0)
    kinds = [s.kind for s in post.particles[0].trace]
    assert kinds == ["reward", "reward", "score"]


def test_an_unknown_verifier_is_refused_with_the_known_ones():
    found = messages('version 0.1\nuse v = verifier("maths")\nprogram p() -> text {\n  return "a"\n}\n')
    assert found == [
        "<input>:2:18: unknown verifier 'maths'; the verifiers are " + ", ".join(sorted(verifiers.CHECKERS))
    ]
