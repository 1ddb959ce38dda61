"""Group rules: a small, safe grammar for group membership computed from features (never eval).

    rule    := or ;  or := and ("or" and)* ;  and := not ("and" not)* ;  not := "not" not | atom
    atom    := "(" rule ")" | NAME OP value | NAME "in" "[" value ("," value)* "]"
    OP      := "<" | "<=" | ">" | ">=" | "==" | "!="
    value   := number | "string" | 'string' | true | false

A missing feature, or a comparison between a number and a string, makes the comparison false.

>>> young = parse("age < 30 and not (sex == 'F')")
>>> young({"age": 25, "sex": "M"}), young({"age": 25, "sex": "F"}), young({"sex": "M"})
(True, False, False)
>>> parse("race in ['Black', 'Other']")({"race": "Other"})
True
>>> parse("age <")
Traceback (most recent call last):
...
learners.groupwise.rules.RuleError: rule 'age <': expected a value at position 5
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

_TOKEN = re.compile(r"""\s*(?:(?P<num>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)|(?P<str>"[^"]*"|'[^']*')|"""
                    r"""(?P<op><=|>=|==|!=|<|>)|(?P<punct>[()\[\],])|(?P<name>[A-Za-z_][A-Za-z0-9_.]*))""")
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
        "!=": operator.ne}
Rule = Callable[[Mapping[str, Any]], bool]


class RuleError(ValueError):
    """A rule that does not parse, with the position."""


def _tokens(text: str) -> list[tuple[str, Any, int]]:
    out: list[tuple[str, Any, int]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise RuleError(f"rule {text!r}: unexpected character at position {pos}")
        kind = str(m.lastgroup)
        raw = m.group(kind)
        start = m.start(kind)
        if kind == "num":
            out.append(("value", float(raw), start))
        elif kind == "str":
            out.append(("value", raw[1:-1], start))
        elif kind == "name" and raw in ("true", "false"):
            out.append(("value", raw == "true", start))
        elif kind == "name" and raw in ("and", "or", "not", "in"):
            out.append((raw, raw, start))
        else:
            out.append((kind, raw, start))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, Any, int]:
        return self.toks[self.i] if self.i < len(self.toks) else ("end", None, len(self.text))

    def take(self, kind: str, what: str) -> Any:
        k, v, pos = self.peek()
        if k != kind and v != kind:
            raise RuleError(f"rule {self.text!r}: expected {what} at position {pos}")
        self.i += 1
        return v

    def rule(self) -> Rule:
        parts = [self.conj()]
        while self.peek()[0] == "or":
            self.i += 1
            parts.append(self.conj())
        if len(parts) == 1:
            return parts[0]
        ps = tuple(parts)
        return lambda f: any(p(f) for p in ps)

    def conj(self) -> Rule:
        parts = [self.neg()]
        while self.peek()[0] == "and":
            self.i += 1
            parts.append(self.neg())
        if len(parts) == 1:
            return parts[0]
        ps = tuple(parts)
        return lambda f: all(p(f) for p in ps)

    def neg(self) -> Rule:
        if self.peek()[0] == "not":
            self.i += 1
            inner = self.neg()
            return lambda f: not inner(f)
        return self.atom()

    def atom(self) -> Rule:
        if self.peek()[1] == "(":
            self.i += 1
            inner = self.rule()
            self.take(")", "')'")
            return inner
        name = self.take("name", "a feature name")
        if self.peek()[0] == "in":
            self.i += 1
            self.take("[", "'['")
            values = [self.take("value", "a value")]
            while self.peek()[1] == ",":
                self.i += 1
                values.append(self.take("value", "a value"))
            self.take("]", "']'")
            allowed = tuple(values)
            return lambda f: name in f and any(_same_kind(f[name], v) and f[name] == v for v in allowed)
        op = _OPS[self.take("op", "a comparison (<, <=, >, >=, ==, !=) or 'in'")]
        value = self.take("value", "a value")
        return lambda f: name in f and _same_kind(f[name], value) and bool(op(f[name], value))


def _same_kind(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str)
    return isinstance(a, int | float) and isinstance(b, int | float)


def parse(text: str) -> Rule:
    """Compiles a rule into a function of a feature mapping (raises :class:`RuleError`)."""
    if not isinstance(text, str) or not text.strip():
        raise RuleError(f"rule {text!r}: empty")
    p = _Parser(text)
    r = p.rule()
    if p.i != len(p.toks):
        raise RuleError(f"rule {text!r}: unexpected {p.peek()[1]!r} at position {p.peek()[2]}")
    return r
