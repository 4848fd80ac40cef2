"""GrowthBook-compatible targeting conditions, validated and compiled once into closures.

Semantics are those of GrowthBook's reference JavaScript SDK (``mongrule.ts``), which
produced the cross-SDK vectors in ``shared/conformance``, JavaScript coercions included: a
missing attribute is ``null`` and compares as 0 (``{"x": {"$lt": 5}}`` matches a missing
``x``); ``$gt``/``$lt`` compare a number with numeric text as numbers; literal ``"10"``
matches 10, literal ``10`` matches ``"10"``, literal ``true`` matches any truthy value;
``$regex`` tests ``String(value)``; ``$elemMatch`` skips falsy elements.

* Lenient mode (``compile_condition``, the default, for evaluation) evaluates anything
  GrowthBook evaluates, as GrowthBook does: an unknown operator, an invalid regex or a
  ``$in`` that is not a list is just false. Where GrowthBook would crash or walk a malformed
  structure by accident (``$or`` not a list, a condition that is not an object), the whole
  condition is false. Evaluation never raises.
* Strict mode (``validate_condition``, ``compile_condition(strict=True)``, for saving a
  condition) also rejects what cannot be meant, raising ``ConditionError`` with a JSON path.

Saved groups (``$inGroup``/``$notInGroup``) are bound at compile time.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import lru_cache, partial
from operator import eq, ge, gt, is_, is_not, le, lt, ne
from typing import Any

__all__ = ["ConditionError", "compile_condition", "evaluate_condition", "validate_condition"]

Test = Callable[[Any], bool]
_NUM = (int, float)  # bool is deliberately absent: `type(True) in _NUM` is False
_SCALAR = (str, bool, int, float)
_TYPE_NAMES = frozenset({"string", "number", "boolean", "object", "array", "null"})
_is_none, _is_not_none = partial(is_, None), partial(is_not, None)  # C-level, no Python frame


class ConditionError(ValueError):
    """A condition that cannot be valid; ``path`` is the JSON path of the offending part."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(path, message)
        self.path, self.message = path, message

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


# --- JavaScript coercions; only reached off the typed fast paths -----------------------------


def _num_str(x: Any) -> str:
    """ECMAScript ``String(number)``: shortest round-trip digits, fixed from 1e-6 to 1e21."""
    if type(x) is int and abs(x) < 2**53:
        return str(x)
    try:
        x = float(x)
    except OverflowError:
        x = math.inf if x > 0 else -math.inf
    if not math.isfinite(x):
        return "NaN" if x != x else ("Infinity" if x > 0 else "-Infinity")
    if x == 0:
        return "0"
    return format(Decimal(repr(x)).normalize(), "f" if 1e-6 <= abs(x) < 1e21 else "e")


def _to_str(v: Any) -> str:
    """JS ``v + ""``."""
    t = type(v)
    if t is str:
        text: str = v  # a typed local, not cast(): no call on this path
        return text
    if v is None or t is bool:
        return "null" if v is None else ("true" if v else "false")
    if t in _NUM:
        return _num_str(v)
    if t is list:
        return ",".join("" if e is None else _to_str(e) for e in v)
    return "[object Object]"


_JS_SPACE = (
    " \t\n\v\f\r\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_RADIX = re.compile(r"0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+")
_INFINITIES = {"Infinity": math.inf, "+Infinity": math.inf, "-Infinity": -math.inf}


def _to_number(v: Any) -> Any:
    """JS ``Number(v)`` after ToPrimitive: null is 0, text that is not a number is NaN."""
    t = type(v)
    if t in _NUM or v is None or t is bool:
        return 0 if v is None else v + 0
    s = (_to_str(v) if t is list else v if t is str else "x").strip(_JS_SPACE)
    if not s or _DECIMAL.fullmatch(s):
        return float(s or 0)
    return int(s, 0) if _RADIX.fullmatch(s) else _INFINITIES.get(s, math.nan)


def _primitive(v: Any) -> Any:
    """JS ToPrimitive: arrays become their joined text, other objects ``"[object Object]"``."""
    if v is None or type(v) in _SCALAR:
        return v
    return _to_str(v) if type(v) is list else "[object Object]"


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _surrogate_pair(m: re.Match[str]) -> str:
    c = ord(m[0]) - 0x10000
    return chr(0xD800 + (c >> 10)) + chr(0xDC00 + (c & 0x3FF))


def _u16(s: str) -> str:
    """JS orders text by UTF-16 code units, Python by code points; only characters above
    U+FFFF differ, so spell those as surrogate pairs before comparing."""
    return s if s.isascii() else _ASTRAL.sub(_surrogate_pair, s)


def _relational(op: Callable[[Any, Any], bool], a: Any, b: Any) -> bool:
    """JS ``a < b`` and friends: two strings compare as text, anything else as numbers."""
    a, b = _primitive(a), _primitive(b)
    if type(a) is str and type(b) is str:
        return op(_u16(a), _u16(b))
    return op(_to_number(a), _to_number(b))  # NaN makes every comparison false, as in JS


def _truthy(v: Any) -> bool:
    t = type(v)
    if t in _NUM:
        truthy: bool = v == v and v != 0  # NaN is falsy
        return truthy
    return v != "" if t is str else v is not None and v is not False  # [] and {} are truthy


_JS_TYPES = {
    str: "string",
    bool: "boolean",
    int: "number",
    float: "number",
    list: "array",
    dict: "object",
    type(None): "null",
}


def _js_type(v: Any) -> str:
    return _JS_TYPES.get(type(v)) or ("object" if isinstance(v, Mapping) else "unknown")


def _is_index(key: str, length: int) -> bool:
    """A canonical array index below ``length`` ("0", "12"; not "01", "-1")."""
    return len(key) <= 10 and key.isascii() and key.isdigit() and (key == "0" or key[0] != "0") and int(key) < length


def _js_json(v: Any) -> str:
    """``JSON.stringify``: GrowthBook compares array and object literals by this text."""
    t = type(v)
    if t is str:
        return json.dumps(v, ensure_ascii=False)
    if t in _NUM:
        text = _num_str(v)
        return text if text[-1].isdigit() else "null"  # NaN and Infinity
    if v is None or t is bool:
        return _to_str(v)
    if t is list or t is tuple:
        return "[" + ",".join(map(_js_json, v)) + "]"
    if not isinstance(v, Mapping):
        return "null"
    items = [(k if type(k) is str else _to_str(k), e) for k, e in v.items()]
    # JS property order: integer-like keys ascending, then the rest in insertion order
    items.sort(key=lambda p: (0, int(p[0])) if _is_index(p[0], 2**32 - 1) else (1, 0))
    return "{" + ",".join(f"{_js_json(k)}:{_js_json(e)}" for k, e in items) + "}"


def _get_path(obj: Any, parts: tuple[str, ...]) -> Any:
    """GrowthBook ``getPath``: a missing step gives None; arrays expose indices and length."""
    for part in parts:
        if type(obj) is list:
            if part == "length":
                obj = len(obj)
            elif _is_index(part, len(obj)):
                obj = obj[int(part)]
            else:
                return None
        elif type(obj) is dict or (obj is not None and type(obj) not in _SCALAR and isinstance(obj, Mapping)):
            obj = obj.get(part)
        else:
            return None
    return obj


_V_STRIP, _V_SPLIT = re.compile(r"^v|\+.*\Z"), re.compile(r"[-.]")


@lru_cache(maxsize=4096)
def _padded_text(s: str) -> str:
    parts = _V_SPLIT.split(_V_STRIP.sub("", s))
    if len(parts) == 3:
        parts.append("~")  # "~" sorts after letters, so 1.0.0 > 1.0.0-beta
    return _u16("-".join(p.rjust(5) if p.isascii() and p.isdigit() else p for p in parts))


def _padded_version(v: Any) -> str:
    """GrowthBook ``paddedVersionString``: numeric parts right-aligned so text order is version order."""
    v = _num_str(v) if type(v) in _NUM else v
    return _padded_text(v if type(v) is str and v else "0")


# --- combinators: unrolled for small arities, where a generator would cost more than the tests


def _always(v: Any) -> bool:
    return True


def _never(v: Any) -> bool:
    return False


def _negate(test: Test) -> Test:
    return lambda v: not test(v)


def _all_of(tests: list[Test]) -> Test:
    if len(tests) <= 1:
        return tests[0] if tests else _always
    if len(tests) == 2:
        a, b = tests
        return lambda v: a(v) and b(v)
    if len(tests) == 3:
        a, b, c = tests
        return lambda v: a(v) and b(v) and c(v)
    return lambda v: all(t(v) for t in tests)


def _any_of(tests: list[Test]) -> Test:
    if len(tests) <= 1:
        return tests[0] if tests else _always  # GrowthBook: an empty $or passes, an empty $nor fails
    if len(tests) == 2:
        a, b = tests
        return lambda v: a(v) or b(v)
    return lambda v: any(t(v) for t in tests)


def _is_operator_object(x: Any) -> bool:
    return isinstance(x, Mapping) and bool(x) and all(type(k) is str and k[:1] == "$" for k in x)


def _on_path(key: str, test: Test) -> Test:
    parts = tuple(key.split("."))
    if len(parts) == 1:  # the common case: one dict lookup, no path walk
        return lambda obj: test(obj.get(key)) if type(obj) is dict else test(_get_path(obj, parts))
    return lambda obj: test(_get_path(obj, parts))


# --- leaf tests --------------------------------------------------------------------------------


def _literal(expected: Any, insensitive: bool = False) -> Test:
    """A plain value, compared the (loose) JavaScript way GrowthBook compares it."""
    t = type(expected)
    if t is str and insensitive:
        low = expected.lower()
        return lambda v: _to_str(v).lower() == low
    if t is str:
        return lambda v: v == expected if type(v) is str else _to_str(v) == expected
    if t is bool:
        return lambda v: v is not None and _truthy(v) is expected
    if t in _NUM:
        return lambda v: v == expected if type(v) in _NUM else _to_number(v) == expected
    if expected is None:
        return _is_none
    text = _js_json(expected)  # arrays and plain objects compare by their JSON text
    return lambda v: _js_json(v) == text


def _strict_equal_to(expected: Any) -> Test:
    """JS ``===``: same type and value; arrays and objects are never identical across parses."""
    t = type(expected)
    if t in _NUM:
        return lambda v: type(v) in _NUM and v == expected
    if expected is not None and t not in _SCALAR:
        return _never
    return lambda v: type(v) is t and v == expected


def _includes(values: list[Any], insensitive: bool) -> Test:
    """JS ``values.includes(v)`` or its case-folded form; an array attribute matches if any of
    its elements does."""
    strs = frozenset(x.lower() if insensitive else x for x in values if type(x) is str)
    nums = frozenset(x for x in values if type(x) in _NUM)  # booleans kept apart from 0 and 1
    consts = [x for x in values if x is None or type(x) is bool]

    def scalar(v: Any) -> bool:
        t = type(v)
        if t is str:
            return (v.lower() if insensitive else v) in strs
        if t in _NUM:
            return v in nums
        return (v is None or t is bool) and any(v is c for c in consts)

    def test(v: Any) -> bool:
        if type(v) is str and not insensitive:
            return v in strs
        return any(map(scalar, v)) if type(v) is list else scalar(v)

    return test


# --- the compiler: one walk validates (strict) and builds the closures -------------------------


class _Compiler:
    def __init__(self, saved_groups: Mapping[str, object] | None, strict: bool) -> None:
        self.groups = saved_groups if isinstance(saved_groups, Mapping) else {}
        self.strict = strict

    def check(self, ok: Any, path: str, message: str) -> None:
        if self.strict and not ok:
            raise ConditionError(path, message)

    def condition(self, cond: Any, path: str) -> Test:
        """A condition object: every key must hold. Malformed structure raises in both modes."""
        if not isinstance(cond, Mapping):
            raise ConditionError(path, "a condition must be a JSON object")
        return _all_of([self.clause(key, arg, f"{path}.{key}") for key, arg in cond.items()])

    def clause(self, key: Any, arg: Any, path: str) -> Test:
        if type(key) is not str:
            raise ConditionError(path, "condition keys must be strings")
        if key in ("$and", "$or", "$nor"):
            if not isinstance(arg, list):
                raise ConditionError(path, f"{key} needs a list of conditions")
            tests = [self.condition(c, f"{path}[{i}]") for i, c in enumerate(arg)]
            return _all_of(tests) if key == "$and" else _any_of(tests) if key == "$or" else _negate(_any_of(tests))
        if key == "$not":
            return _negate(self.condition(arg, path))
        # Any other key, even one starting with "$", is an attribute path in GrowthBook
        self.check(key not in _OPERATORS, path, f"{key} is a value operator; put it under an attribute")
        self.check(all(key.split(".")), path, "attribute path has an empty segment")
        return _on_path(key, self.value(arg, path))

    def value(self, arg: Any, path: str, insensitive: bool = False) -> Test:
        """What an attribute's value must satisfy: an operator object or a literal."""
        if _is_operator_object(arg):
            return _all_of([self.operator(op, a, f"{path}.{op}") for op, a in arg.items()])
        self.check(
            not (isinstance(arg, Mapping) and any(str(k).startswith("$") for k in arg)),
            path,
            "mixes operators with plain keys (an object with plain keys is compared literally)",
        )
        self.check(arg is None or isinstance(arg, (*_SCALAR, list, Mapping)), path, "not a JSON value")
        return _literal(arg, insensitive)

    def operator(self, op: str, arg: Any, path: str) -> Test:
        build, *params = _OPERATORS.get(op, (None,))
        if build is None:
            self.check(False, path, f"unknown operator {op}")
            return _never  # GrowthBook: an unknown operator never matches
        return build(self, arg, path, *params)

    def op_compare(self, arg: Any, path: str, fn: Callable[[Any, Any], bool]) -> Test:
        self.check(type(arg) in (str, int, float), path, "needs a number or a string")
        expected = _primitive(arg)
        if type(expected) in _NUM:
            return lambda v: fn(v, expected) if type(v) in _NUM else _relational(fn, v, expected)
        if type(expected) is str:
            key = _u16(expected)
            return lambda v: fn(_u16(v), key) if type(v) is str else _relational(fn, v, expected)
        return lambda v: _relational(fn, v, expected)

    def op_version(self, arg: Any, path: str, fn: Callable[[str, str], bool]) -> Test:
        self.check(type(arg) in (str, int, float) and arg != "", path, "needs a version string")
        expected = _padded_version(arg)
        return lambda v: fn(_padded_version(v), expected)

    def op_eq(self, arg: Any, path: str, negate: bool) -> Test:
        self.check(
            arg is None or type(arg) in _SCALAR,
            path,
            "needs a string, number, boolean or null (arrays and objects never match)",
        )
        test = _strict_equal_to(arg)
        return _negate(test) if negate else test

    def op_in(self, arg: Any, path: str, negate: bool, insensitive: bool) -> Test:
        self.check(isinstance(arg, list), path, "needs a list")
        if not isinstance(arg, list):
            return _never  # GrowthBook: not a list is false, for $nin too
        for i, x in enumerate(arg):
            self.check(
                x is None or type(x) in _SCALAR, f"{path}[{i}]", "items must be strings, numbers, booleans or null"
            )
        test = _includes(arg, insensitive)
        return _negate(test) if negate else test

    def op_group(self, arg: Any, path: str, negate: bool) -> Test:
        self.check(type(arg) is str and arg, path, "needs a saved group id")
        members = self.groups.get(_to_str(arg))
        test = _includes(members if isinstance(members, list) else [], False)  # unknown group: empty
        return _negate(test) if negate else test

    def op_exists(self, arg: Any, path: str) -> Test:
        self.check(type(arg) is bool or (type(arg) is int and arg in (0, 1)), path, "needs true or false")
        return _is_not_none if _truthy(arg) else _is_none

    def op_not(self, arg: Any, path: str) -> Test:
        return _negate(self.value(arg, path))

    def op_size(self, arg: Any, path: str) -> Test:
        self.check(
            _is_operator_object(arg) or (type(arg) in _NUM and arg >= 0 and float(arg).is_integer()),
            path,
            'needs a non-negative integer or an operator object such as {"$gt": 2}',
        )
        inner = self.value(arg, path)
        return lambda v: type(v) is list and inner(len(v))

    def op_elem_match(self, arg: Any, path: str) -> Test:
        if _is_operator_object(arg):
            check = self.value(arg, path)  # operators test each element itself
        else:
            self.check(arg != {}, path, "needs a non-empty object")
            check = self.condition(arg, path)  # plain keys test each element's fields
        # GrowthBook skips falsy elements (0, "", false, null) without testing them
        return lambda v: type(v) is list and any(_truthy(x) and check(x) for x in v)

    def op_all(self, arg: Any, path: str, insensitive: bool) -> Test:
        self.check(isinstance(arg, list), path, "needs a list")
        if not isinstance(arg, list):
            return _never
        tests = [self.value(x, f"{path}[{i}]", insensitive) for i, x in enumerate(arg)]
        return lambda v: type(v) is list and all(any(map(t, v)) for t in tests)

    def op_regex(self, arg: Any, path: str, flags: int) -> Test:
        self.check(type(arg) is str, path, "needs a regular expression string")
        try:
            search = re.compile(arg, flags).search  # compiled once, here
        except (re.error, TypeError, ValueError, OverflowError, RecursionError) as exc:
            self.check(False, path, f"invalid regular expression: {exc}")
            return _never  # GrowthBook: an invalid regex never matches
        return lambda v: (search(v) if type(v) is str else search(_to_str(v))) is not None

    def op_type(self, arg: Any, path: str) -> Test:
        self.check(type(arg) is str and arg in _TYPE_NAMES, path, f"must be one of {', '.join(sorted(_TYPE_NAMES))}")
        return lambda v: _js_type(v) == arg


_C = _Compiler  # operator -> (builder, extra arguments)
_OPERATORS: dict[str, tuple[Callable[..., Test], *tuple[object, ...]]] = {
    "$eq": (_C.op_eq, False),
    "$ne": (_C.op_eq, True),
    "$lt": (_C.op_compare, lt),
    "$lte": (_C.op_compare, le),
    "$gt": (_C.op_compare, gt),
    "$gte": (_C.op_compare, ge),
    "$veq": (_C.op_version, eq),
    "$vne": (_C.op_version, ne),
    "$vlt": (_C.op_version, lt),
    "$vlte": (_C.op_version, le),
    "$vgt": (_C.op_version, gt),
    "$vgte": (_C.op_version, ge),
    "$in": (_C.op_in, False, False),
    "$nin": (_C.op_in, True, False),
    "$ini": (_C.op_in, False, True),
    "$nini": (_C.op_in, True, True),
    "$inGroup": (_C.op_group, False),
    "$notInGroup": (_C.op_group, True),
    "$all": (_C.op_all, False),
    "$alli": (_C.op_all, True),
    "$regex": (_C.op_regex, 0),
    "$regexi": (_C.op_regex, re.IGNORECASE),
    "$exists": (_C.op_exists,),
    "$not": (_C.op_not,),
    "$size": (_C.op_size,),
    "$elemMatch": (_C.op_elem_match,),
    "$type": (_C.op_type,),
}


# --- public API ----------------------------------------------------------------------------------


def compile_condition(
    condition: object, saved_groups: Mapping[str, object] | None = None, *, strict: bool = False
) -> Callable[[Mapping[str, Any]], bool]:
    """Compile ``condition`` once into a fast ``attributes -> bool`` function.

    ``strict=False`` (default, evaluation time) is GrowthBook-lenient and never raises: what
    GrowthBook cannot evaluate structurally compiles to "always false". ``strict=True`` first
    validates like :func:`validate_condition`, raising :class:`ConditionError`. Saved groups
    are bound now: recompile when they change.
    """
    try:
        test = _Compiler(saved_groups, strict).condition(condition, "$")
    except (ConditionError, RecursionError) as exc:
        if strict:
            if isinstance(exc, ConditionError):
                raise
            raise ConditionError("$", "nested too deeply") from None
        return _never

    def evaluate(attributes: Mapping[str, Any]) -> bool:
        try:
            return test(attributes)
        except Exception:  # e.g. a cyclic attribute value: fail the condition, never the caller
            return False

    return evaluate


def validate_condition(condition: object) -> None:
    """Raise :class:`ConditionError`, naming the JSON path, unless ``condition`` is valid.

    Strict, for saving a condition: besides malformed structure it rejects unknown operators,
    ``$in``/``$nin``/``$all`` that are not lists, malformed ``$size``/``$elemMatch``, invalid
    or non-string regexes, non-boolean ``$exists``, unknown ``$type`` names, and other parts
    that GrowthBook would silently evaluate as false.
    """
    compile_condition(condition, strict=True)


@lru_cache(maxsize=512)
def _compiled(condition_json: str, groups_json: str) -> Callable[[Mapping[str, Any]], bool]:
    return compile_condition(json.loads(condition_json), json.loads(groups_json))


def evaluate_condition(
    condition: object, attributes: Mapping[str, Any], saved_groups: Mapping[str, object] | None = None
) -> bool:
    """Evaluate once (lenient), reusing compiled conditions from a small LRU cache."""
    try:
        # Key order is kept (no sort_keys): it matters for object literals, compared as JSON text
        key = (json.dumps(condition), json.dumps(saved_groups))
    except (TypeError, ValueError):  # not JSON-serialisable: compile without caching
        return compile_condition(condition, saved_groups)(attributes)
    return _compiled(*key)(attributes)
