"""Errors are part of the language: one test per error class, with its exact message.

Every message reads ``file.tts:LINE:COL: message``, then the source line and a caret; it
uses the language's words (never Lark's terminal names), and every static problem is
reported before any model is loaded or any engine runs.
"""

from __future__ import annotations

import pytest

import ppl.app.models
from ppl.app import check, load
from ppl.grammar import TtsError

HEAD = 'version 0.1\nuse lm = model("m")\n'


def program(body: str, tail: str = "") -> str:
    return HEAD + "program f() -> text {\n" + body + "\n}\n" + tail


def error_of(source: str) -> TtsError:
    with pytest.raises(TtsError) as caught:
        check(source, "f.tts")
    return caught.value


def only_message(source: str) -> str:
    error = error_of(source)
    assert len(error.diagnostics) == 1, str(error)
    return str(error)


# ---- syntax -------------------------------------------------------------------------------------


def test_syntax_error_names_what_was_expected_with_a_caret():
    source = program('  s ~ lm.gen(lm.encode("a") max_tokens = 3)\n  return s.text')
    assert only_message(source) == (
        "f.tts:4:29: expected ')' or ',', found the name 'max_tokens'\n"
        '      s ~ lm.gen(lm.encode("a") max_tokens = 3)\n'
        "                                ^"
    )


def test_syntax_error_groups_expressions_and_statements():
    assert only_message(program("  let x = 1 +\n  return x")).startswith(
        "f.tts:5:3: expected an expression, found the keyword 'return'"
    )
    assert only_message(HEAD + 'use x = model("a")\nprogram f() -> text {}\nuse') == (
        "f.tts:5:4: expected a name, found the end of the file\n    use\n       ^"
    )


def test_unexpected_character():
    assert only_message(program('  let x = 1 $ 2\n  return "a"')) == (
        "f.tts:4:13: unexpected character '$'\n      let x = 1 $ 2\n                ^"
    )


def test_unterminated_string():
    assert only_message(program('  return "abc')).splitlines()[0] == (
        'f.tts:4:10: unterminated string: a string ends with " on the same line'
    )


def test_unknown_escape_in_a_string():
    assert only_message(program('  return "a\\qb"')).splitlines()[0] == (
        "f.tts:4:12: unknown escape '\\q' in a string; the escapes are \\n \\t \\r \\\\ \\\" \\0 \\$"
    )


def test_missing_and_unsupported_version():
    assert only_message('use lm = model("m")\n').splitlines()[0] == (
        "f.tts:1:1: a .tts file starts with its version line: `version 0.1`"
    )
    assert only_message("version 0.2\n").splitlines()[0] == (
        "f.tts:1:9: unsupported version 0.2: this ppl reads version 0.1"
    )


def test_invalid_utf8_has_a_position():
    with pytest.raises(TtsError) as caught:
        check(b"version 0.1\n# caf\xe9\n", "f.tts")
    assert str(caught.value).splitlines()[0] == "f.tts:2:6: this file is not valid UTF-8 text"


# ---- names and types ---------------------------------------------------------------------------------


def test_unknown_name():
    assert only_message(program("  return answer")) == (
        "f.tts:4:10: unknown name 'answer'\n      return answer\n             ^"
    )


def test_score_of_a_text_is_a_type_error():
    source = program('  s ~ lm.gen(lm.encode("a"))\n  score s.text\n  return s.text')
    assert only_message(source) == (
        "f.tts:5:9: score needs a number (a log weight), got a text\n      score s.text\n            ^"
    )


def test_other_type_errors():
    messages = error_of(
        program('  let n = 1\n  n = "one"\n  condition n\n  let t = "a" + 1\n  return n')
    ).messages
    assert messages == [
        "'n' is a number and cannot be given a text",
        "condition needs a bool, got a number",
        "cannot add a number to a text",
        "the program returns a text, not a number",
    ]


def test_random_choice_must_stand_after_a_tilde():
    assert only_message(program('  let s = lm.gen(lm.encode("a"))\n  return s.text')).splitlines()[0] == (
        "f.tts:4:11: lm.gen(...) is a random choice: write `s ~ lm.gen(...)`"
    )
    assert only_message(program('  x ~ len("a")\n  return "a"')).splitlines()[0] == (
        "f.tts:4:7: ~ needs a random choice: x ~ lm.gen(...), x ~ select(...) "
        "or a distribution such as x ~ bernoulli(0.5)"
    )


def test_program_must_return():
    assert only_message(program("  let x = 1")).splitlines()[0] == (
        "f.tts:3:1: program 'f' can end without returning a text: end it with `return ...`"
    )


# ---- keyword arguments ------------------------------------------------------------------------------


def test_unknown_keyword_argument():
    source = program('  s ~ lm.gen(lm.encode("a"), temp = 0.5)\n  return s.text')
    assert only_message(source) == (
        "f.tts:4:30: lm.gen has no argument 'temp'; its arguments are context, stop, max_tokens, "
        "temperature, n, top_k, top_p, min_p, regex, grammar, json_schema, choice\n"
        '      s ~ lm.gen(lm.encode("a"), temp = 0.5)\n'
        "                                 ^"
    )


def test_missing_keyword_argument():
    assert only_message(HEAD + "use prm = judge(lm)\n") == (
        "f.tts:3:11: judge is missing the argument 'question'\n    use prm = judge(lm)\n              ^"
    )


def test_repeated_and_misplaced_arguments():
    messages = error_of(
        program('  s ~ lm.gen(lm.encode("a"), max_tokens = 1, max_tokens = 2)\n  return s.text')
    ).messages
    assert messages == ["the argument 'max_tokens' of lm.gen is given twice"]
    assert error_of(program("  return text(value = 1, 2)")).messages == [
        "a positional argument cannot follow a keyword argument"
    ]


# ---- control flow -----------------------------------------------------------------------------------


def test_finish_outside_a_step():
    assert only_message(program('  finish\n  return "a"')) == (
        "f.tts:4:3: finish is only allowed inside a step block\n      finish\n      ^"
    )


# ---- algorithms and backends ----------------------------------------------------------------------------


def test_unknown_algorithm():
    source = program('  return "a"', "infer f with anneal(width = 4)\n")
    assert only_message(source) == (
        "f.tts:6:14: unknown algorithm 'anneal'; the algorithms are adaptive, beam, best_of_n, dvts, enumerate, importance, mh, particle_gibbs, restarts, smc\n"
        "    infer f with anneal(width = 4)\n"
        "                 ^"
    )


def test_bad_algorithm_settings():
    source = program(
        '  return "a"', 'infer f with smc(particles = 0, ess = 2, resample = "wild", beams = 3)\n'
    )
    assert error_of(source).messages == [
        "smc has no argument 'beams'; its arguments are particles, ess, resample",
    ]
    source = program('  return "a"', 'infer f with smc(particles = 0, ess = 2, resample = "wild")\n')
    assert error_of(source).messages == [
        "particles must be a whole number >= 1, got 0",
        "ess must be between 0 and 1 (0 = never resample, 1 = always), got 2",
        "unknown resampling scheme 'wild'; the schemes are multinomial, residual, stratified, systematic",
    ]


def test_unknown_backend():
    assert only_message('version 0.1\nuse lm = model("m", backend = "tpu")\n') == (
        "f.tts:2:31: unknown backend 'tpu'; the backends are openai, tabular, vllm\n"
        '    use lm = model("m", backend = "tpu")\n'
        "                                  ^"
    )


def test_a_model_the_backend_lacks_is_reported_at_load():
    with pytest.raises(TtsError) as caught:
        load('version 0.1\nuse lm = model("m", backend = "vllm")\n', filename="f.tts")
    assert str(caught.value).splitlines()[0] == (
        "f.tts:2:31: the vllm backend has no model 'm': name an embedded model "
        "(smollm2-135m-instruct) or a Hugging Face model folder"
    )


# ---- no way to run Python ------------------------------------------------------------------------------

FUNCTIONS = (
    "assistant, bernoulli, beta, boxed, categorical, contains, exp, extract, extract_all, join, "
    "last_number, len, log, lower, matches, normal, number, poisson, range, replace, select, split, "
    "strip, system, text, uniform, user"
)


@pytest.mark.parametrize(
    "body, message",
    [
        (
            '  let os = __import__("os")\n  return "a"',
            f"unknown function '__import__'; the functions are {FUNCTIONS}",
        ),
        ('  return open("/etc/passwd")', f"unknown function 'open'; the functions are {FUNCTIONS}"),
        ('  return eval("1")', f"unknown function 'eval'; the functions are {FUNCTIONS}"),
        (
            '  let c = lm.__class__\n  return "a"',
            "a model has no field or method '__class__'; its methods are chat, chat_turns, decode, encode, gen",
        ),
        (
            '  return lm.__init__.__globals__("x")',
            "a model has no field or method '__init__'; its methods are chat, chat_turns, decode, encode, gen",
        ),
        ('  return "a".__class__.__name__', "a text has no field '__class__'"),
        ('  return "a".join(["b"])', "a text has no method 'join'"),
        (
            '  s ~ lm.gen(lm.encode("a"))\n  return s.__dict__',
            "a segment has no field '__dict__'; its fields are text, tokens, eos, finish_reason, logprob",
        ),
    ],
)
def test_python_cannot_be_reached(body, message):
    assert error_of(program(body)).messages == [message]


def test_python_statements_are_not_syntax():
    assert only_message("version 0.1\nimport os\n").splitlines()[0] == (
        "f.tts:2:1: expected 'infer', 'param', 'program', 'use' or the end of the file, found the name 'import'"
    )
    assert error_of(program('  exec("x")\n  return "a"')).messages == ["expected '+=', '=' or '~', found '('"]


# ---- all at once, before any engine ---------------------------------------------------------------------------


def test_every_error_is_reported_at_once_before_any_model_is_loaded(monkeypatch):
    def no_engine(*args, **kwargs):
        raise AssertionError("a model was loaded before the checks finished")

    monkeypatch.setattr(ppl.app.models, "load_model", no_engine)
    source = (
        'version 0.1\nuse lm = model("m")\nuse prm = judge(lm, question = "ok?", strict = true)\n'
        "program f(x: text) -> number {\n"
        "  s ~ lm.gen(lm.encode(x), temp = 1)\n"
        '  score "high"\n'
        "  finish\n"
        "  return y\n"
        "}\n"
        "infer f with anneal(width = 2)\n"
    )
    with pytest.raises(TtsError) as caught:
        load(source, filename="many.tts")
    assert caught.value.messages == [
        "judge has no argument 'strict'; its arguments are model, question",
        "lm.gen has no argument 'temp'; its arguments are context, stop, max_tokens, temperature, n, "
        "top_k, top_p, min_p, regex, grammar, json_schema, choice",
        "score needs a number (a log weight), got a text",
        "finish is only allowed inside a step block",
        "unknown name 'y'",
        "unknown algorithm 'anneal'; the algorithms are adaptive, beam, best_of_n, dvts, enumerate, importance, mh, particle_gibbs, restarts, smc",
    ]
    assert [d.position.line for d in caught.value.diagnostics] == [3, 5, 6, 7, 8, 10]


def test_algorithm_settings_are_checked_by_the_interpreter():
    source = program('  return "a"', "infer f with mh(steps = 2, burn = 2)\n")
    assert only_message(source) == (
        "f.tts:6:14: mh(): burn must be smaller than steps (2), got 2\n"
        "    infer f with mh(steps = 2, burn = 2)\n"
        "                 ^"
    )


def test_deep_nesting_is_an_error_not_a_crash():
    source = program("  return text(" + "-" * 3000 + "1)")
    assert error_of(source).messages == ["this is nested too deeply (more than 100 levels)"]
    source = program(
        "  let x = 0\n" + "  if true {\n" * 400 + "  x = 1\n" + "  }\n" * 400 + "  return text(x)"
    )
    assert error_of(source).messages == ["this is nested too deeply (more than 100 levels)"]


def test_runtime_errors_kill_the_particle_with_a_position():
    from ppl.algorithms import ImportanceSampling

    module = load(program('  let items = ["a"]\n  return items[3]'), filename="f.tts")
    posterior = ImportanceSampling(2).run(module.programs["f"], [()], seed=0)[0]
    assert posterior.all_dead
    assert posterior.diagnostics.deaths == ["TtsRuntimeError: f.tts:5:10: index out of range"] * 2


# ---- habits from Python get a hint of their own (read from Lark's tokens and expectations) --------------


@pytest.mark.parametrize(
    "body, message",
    [
        (
            '  for i in range(3):\n    score 1\n  return "a"',
            "f.tts:4:20: a block is written in braces, `{ ... }`, not with ':' and indentation\n"
            "      for i in range(3):\n"
            "                       ^",
        ),
        (
            '  let x = true\n  if x:\n    score 1\n  return "a"',
            "f.tts:5:7: a block is written in braces, `{ ... }`, not with ':' and indentation\n"
            "      if x:\n"
            "          ^",
        ),
        (
            '  let x = 1\n  if x = 1 { score 1 }\n  return "a"',
            "f.tts:5:8: '=' gives a variable a new value; to compare, write '=='\n"
            "      if x = 1 { score 1 }\n"
            "           ^",
        ),
        (
            "  return 'abc'",
            'f.tts:4:10: strings are written in double quotes ("..."), not single quotes\n'
            "      return 'abc'\n"
            "             ^",
        ),
        (
            '  let x = true\n  if x { score 1 } elif x { score 2 }\n  return "a"',
            "f.tts:5:20: write `else if`, not `elif`\n"
            "      if x { score 1 } elif x { score 2 }\n"
            "                       ^",
        ),
        (
            '  let x = true && false\n  return "a"',
            "f.tts:4:16: '&&' is written `and` in .tts\n      let x = true && false\n                   ^",
        ),
    ],
)
def test_python_habits_get_a_specific_hint(body, message):
    assert only_message(program(body)) == message


def test_an_unclosed_brace_is_reported_at_the_brace():
    # the `if` block's '}' is missing: its '{' is named, not the next declaration
    source = HEAD + (
        'program f() -> text {\n  let x = 1\n  if true {\n    x = 2\n  return "a"\n}\n\n'
        'program g() -> text {\n  return "b"\n}\n'
    )
    assert only_message(source) == (
        "f.tts:5:11: this '{' is never closed: add its '}' (the keyword 'program' on line 10 "
        "comes before it)\n"
        "      if true {\n"
        "              ^"
    )
    # a program's own '{', reached at the end of the file
    assert only_message(HEAD + 'program f() -> text {\n  return "a"\n') == (
        "f.tts:3:21: this '{' is never closed: add its '}' (the file ends before it is)\n"
        "    program f() -> text {\n"
        "                        ^"
    )


def test_a_zero_weight_death_names_its_place_in_the_file():
    from ppl.algorithms import ImportanceSampling

    module = load(program('  let x = 1\n  score log(0)\n  return "a"'), filename="f.tts")
    posterior = ImportanceSampling(2).run(module.programs["f"], [()], seed=0)[0]
    assert posterior.diagnostics.deaths == ["f.tts:5:3: score at site 0 gave weight zero"] * 2
    module = load(program('  condition 1 > 2\n  return "a"'), filename="f.tts")
    posterior = ImportanceSampling(1).run(module.programs["f"], [()], seed=0)[0]
    assert posterior.diagnostics.deaths == ["f.tts:4:3: condition at site 0 gave weight zero"]


def test_the_documented_spelling_works_after_import_ppl():
    """README: `ppl.grammar.load(...)` after a bare `import ppl` (a fresh interpreter)."""
    import subprocess
    import sys

    code = (
        "import ppl\n"
        "m = ppl.grammar.load('version 0.1\\nprogram f() -> text {\\n  return \"a\"\\n}\\n',"
        " catalog=ppl.grammar.Catalog({}, frozenset(), ()), models={})\n"
        "print(sorted(m.programs), ppl.app.load, ppl.algorithms.SMC, ppl.backends.TabularLM)\n"
        "ppl.nothing\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("['f'] <function load")
    assert done.stderr.strip().splitlines()[-1] == "AttributeError: module 'ppl' has no attribute 'nothing'"


def test_python_constants_are_spelt_the_tts_way():
    assert error_of(program("  let x = True\n  let y = None\n  return text(x)")).messages == [
        "unknown name 'True': .tts writes `true`",
        "unknown name 'None': .tts writes no None (every value has a type)",
    ]


# ---- constraints on gen -------------------------------------------------------------------------


def test_a_malformed_regex_is_an_error_at_its_literal():
    source = program('  s ~ lm.gen(lm.encode("a"), regex = "(a|b")\n  return s.text')
    message = only_message(source)
    assert message.startswith("f.tts:4:38: regex: bad regex: Regex parsing error at position 5")
    assert message.endswith('      s ~ lm.gen(lm.encode("a"), regex = "(a|b")\n' + " " * 41 + "^")


def test_a_malformed_grammar_or_schema_or_choice_is_an_error_at_its_literal():
    grammar = only_message(program('  s ~ lm.gen(lm.encode("a"), grammar = "start: (")\n  return s.text'))
    assert grammar.startswith("f.tts:4:40: grammar: bad grammar: Lark error at line 1, column")
    schema = only_message(
        program('  s ~ lm.gen(lm.encode("a"), json_schema = "{\\"type\\": 3")\n  return s.text')
    )
    assert schema.startswith("f.tts:4:44: json_schema: json_schema is not valid JSON")
    choice = only_message(program('  s ~ lm.gen(lm.encode("a"), choice = ["a", ""])\n  return s.text'))
    assert choice.startswith("f.tts:4:39: choice: choice needs at least one option, and no empty option")
    both = only_message(program('  s ~ lm.gen(lm.encode("a"), regex = "a", choice = ["a"])\n  return s.text'))
    assert both.startswith("f.tts:4:43: gen takes one constraint at a time, got regex and choice")
