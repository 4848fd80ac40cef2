"""GrowthBook-compatible targeting conditions, validated and compiled once into closures.

The semantics are those of GrowthBook's reference JavaScript SDK (``mongrule.ts``), which
produced the cross-SDK vectors in ``shared/conformance``, JavaScript coercions included:
a missing attribute is ``null``; ``$gt``/``$lt`` compare a number with a numeric string as
numbers and ``null`` as 0; a literal ``"10"`` matches the number 10 and a literal ``10``
matches ``"10"`` (and ``0`` matches a missing attribute); a literal ``true`` matches any
truthy value; ``$regex`` tests ``String(value)``; ``$elemMatch`` skips falsy elements.

Two modes share one compiler:

* lenient (``compile_condition``, the default, used at evaluation time) evaluates whatever
  GrowthBook would, exactly as GrowthBook does: an unknown operator, an invalid regex or a
  ``$in`` that is not a list is simply false there. Where the reference SDK would crash or
  walk a malformed structure by accident (``$or`` not a list, a condition that is not an
  object), the whole condition is false. Evaluation never raises.
* strict (``validate_condition``, ``compile_condition(strict=True)``, used when an operator
  saves a condition) also rejects what cannot be meant, with a ``ConditionError`` naming the
  JSON path, e.g. ``$.$or[1].tenure_months.$gt``.

Saved groups (``$inGroup``/``$notInGroup``) are resolved at compile time: recompile when
they change.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from operator import eq, ge, gt, le, lt, ne
from typing import Any

__all__ = ["ConditionError", "compile_condition", "evaluate_condition", "validate_condition"]

Test = Callable[[Any], bool]
_NUM = (int, float)  # bool is deliberately absent: `type(True) in _NUM` is False
_NAN = float("nan")
_TYPE_NAMES = frozenset({"string", "number", "boolean", "object", "array", "null"})


class ConditionError(ValueError):
    """A condition that cannot be valid; ``path`` is the JSON path of the offending part."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(path, message)
        self.path, self.message = path, message

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


# --- JavaScript coercions (only reached off the fast paths) --------------------------------

def _num_str(x: Any) -> str:
    """ECMAScript ``String(number)``: shortest round-trip digits, JS exponent thresholds."""
    if type(x) is int and -2**53 <= x <= 2**53:
        return str(x)
    try:
        x = float(x)
    except OverflowError:
        x = math.inf if x > 0 else -math.inf
    if x != x:
        return "NaN"
    if x == 0:
        return "0"
    if x < 0:
        return "-" + _num_str(-x)
    if x == math.inf:
        return "Infinity"
    mantissa, _, exp = repr(x).partition("e")
    whole, _, frac = mantissa.partition(".")
    padded = (whole + frac).lstrip("0")
    digits = padded.rstrip("0")
    k, n = len(digits), int(exp or 0) - len(frac) + len(padded)  # x = 0.<digits> * 10**n
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    e = n - 1
    return digits[0] + ("." + digits[1:] if k > 1 else "") + ("e+" if e > 0 else "e-") + str(abs(e))


def _to_str(v: Any) -> str:
    """JS ``v + ""``."""
    t = type(v)
    if t is str:
        return v
    if v is None:
        return "null"
    if t is bool:
        return "true" if v else "false"
    if t in _NUM:
        return _num_str(v)
    if t is list:
        return ",".join("" if e is None else _to_str(e) for e in v)
    return "[object Object]"


_JS_SPACE = " \t\n\v\f\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_RADIX = re.compile(r"0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+")


def _to_number(v: Any) -> Any:
    """JS ``Number(v)`` (after ToPrimitive): null is 0, unparseable text is NaN."""
    t = type(v)
    if t in _NUM:
        return v
    if v is None:
        return 0
    if t is bool:
        return int(v)
    if t is list:
        v, t = _to_str(v), str
    if t is not str:
        return _NAN
    s = v.strip(_JS_SPACE)
    if not s:
        return 0
    if _DECIMAL.fullmatch(s):
        return float(s)
    if _RADIX.fullmatch(s):
        return int(s, 0)
    return {"Infinity": math.inf, "+Infinity": math.inf, "-Infinity": -math.inf}.get(s, _NAN)


def _primitive(v: Any) -> Any:
    """JS ToPrimitive: arrays become their joined text, objects ``"[object Object]"``."""
    t = type(v)
    if t is list:
        return _to_str(v)
    return v if v is None or t in (str, bool, int, float) else "[object Object]"


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _u16(s: str) -> str:
    """JS orders strings by UTF-16 code units, Python by code points; they differ only for
    characters above U+FFFF, so spell those as surrogate pairs before comparing."""
    if s.isascii():
        return s
    return _ASTRAL.sub(lambda m: (lambda c: chr(0xD800 + (c >> 10)) + chr(0xDC00 + (c & 0x3FF)))(ord(m[0]) - 0x10000), s)


def _relational(op: Callable[[Any, Any], bool], a: Any, b: Any) -> bool:
    """JS ``a < b`` and friends: two strings compare as text, anything else as numbers."""
    a, b = _primitive(a), _primitive(b)
    if type(a) is str and type(b) is str:
        return op(_u16(a), _u16(b))
    return op(_to_number(a), _to_number(b))  # NaN makes every comparison false, as in JS


def _truthy(v: Any) -> bool:
    if v is None or v is False:
        return False
    t = type(v)
    if t in _NUM:
        return v == v and v != 0  # NaN is falsy
    return v != "" if t is str else True  # arrays and objects are truthy even when empty


def _js_type(v: Any) -> str:
    t = type(v)
    if t in _NUM:
        return "number"
    name = {str: "string", bool: "boolean", list: "array", dict: "object", type(None): "null"}.get(t)
    return name or ("object" if isinstance(v, Mapping) else "unknown")


def _is_index(key: str, length: int) -> bool:
    """A canonical array index below ``length`` ("0", "12"; not "01", "-1")."""
    return len(key) <= 10 and key.isascii() and key.isdigit() and (key == "0" or key[0] != "0") and int(key) < length


def _js_json(v: Any) -> str:
    """``JSON.stringify``: GrowthBook compares array and object literals by this text."""
    t = type(v)
    if t is str:
        return json.dumps(v, ensure_ascii=False)
    if t in _NUM:
        s = _num_str(v)
        return s if s[-1].isdigit() else "null"  # NaN and Infinity
    if v is None or t is bool:
        return _to_str(v)
    if t is list or t is tuple:
        return "[" + ",".join(_js_json(e) for e in v) + "]"
    if isinstance(v, Mapping):
        items = [(k if type(k) is str else _to_str(k), e) for k, e in v.items()]
        # JS property order: integer-like keys ascending, then the rest in insertion order
        indices = sorted((p for p in items if _is_index(p[0], 2**32 - 1)), key=lambda p: int(p[0]))
        items = indices + [p for p in items if not _is_index(p[0], 2**32 - 1)]
        return "{" + ",".join(f"{_js_json(k)}:{_js_json(e)}" for k, e in items) + "}"
    return "null"


def _get_path(obj: Any, parts: tuple[str, ...]) -> Any:
    """GrowthBook ``getPath``: a missing step gives None; arrays expose indices and length."""
    for part in parts:
        t = type(obj)
        if t is dict:
            obj = obj.get(part)
        elif t is list:
            if part == "length":
                obj = len(obj)
            elif _is_index(part, len(obj)):
                obj = obj[int(part)]
            else:
                return None
        elif obj is None or t in (str, bool, int, float) or not isinstance(obj, Mapping):
            return None
        else:
            obj = obj.get(part)
    return obj


_V_STRIP, _V_SPLIT = re.compile(r"^v|\+.*\Z"), re.compile(r"[-.]")


@lru_cache(maxsize=4096)
def _padded_text(s: str) -> str:
    parts = _V_SPLIT.split(_V_STRIP.sub("", s))
    if len(parts) == 3:
        parts.append("~")  # "~" sorts last, so 1.0.0 > 1.0.0-beta
    return _u16("-".join(p.rjust(5) if p.isascii() and p.isdigit() else p for p in parts))


def _padded_version(v: Any) -> str:
    """GrowthBook ``paddedVersionString``: numeric parts right-aligned so text order is version order."""
    if type(v) in _NUM:
        v = _num_str(v)
    return _padded_text(v if type(v) is str and v else "0")


# --- small combinators ----------------------------------------------------------------------

def _always(v: Any) -> bool:
    return True


def _never(v: Any) -> bool:
    return False


def _is_none(v: Any) -> bool:
    return v is None


def _is_not_none(v: Any) -> bool:
    return v is not None


def _negate(test: Test) -> Test:
    return lambda v: not test(v)


def _all_of(tests: list[Test]) -> Test:
    # Unrolled for the common small cases: a generator per evaluation costs more than the tests
    if not tests:
        return _always
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda v: a(v) and b(v)
    if len(tests) == 3:
        a, b, c = tests
        return lambda v: a(v) and b(v) and c(v)
    return lambda v: all(t(v) for t in tests)


def _any_of(tests: list[Test]) -> Test:
    if not tests:
        return _always  # GrowthBook: an empty $or passes (so an empty $nor fails)
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda v: a(v) or b(v)
    return lambda v: any(t(v) for t in tests)


def _is_operator_object(x: Any) -> bool:
    return isinstance(x, Mapping) and bool(x) and all(type(k) is str and k[:1] == "$" for k in x)


def _on_path(key: str, test: Test) -> Test:
    if "." not in key:  # the common case: one dict lookup, no split at evaluation time
        parts = (key,)
        return lambda obj: test(obj.get(key)) if type(obj) is dict else test(_get_path(obj, parts))
    parts = tuple(key.split("."))
    return lambda obj: test(_get_path(obj, parts))


# --- leaf tests -------------------------------------------------------------------------------

def _literal(expected: Any, insensitive: bool = False) -> Test:
    """A plain value, compared the JavaScript way GrowthBook compares it."""
    t = type(expected)
    if t is str:
        if insensitive:
            low = expected.lower()
            return lambda v: _to_str(v).lower() == low
        return lambda v: v == expected if type(v) is str else _to_str(v) == expected
    if t is bool:
        return lambda v: v is not None and _truthy(v) is expected
    if t in _NUM:
        return lambda v: v == expected if type(v) in _NUM else _to_number(v) == expected
    if expected is None:
        return _is_none
    text = _js_json(expected)
    return lambda v: _js_json(v) == text


def _strict_equal_to(expected: Any) -> Test:
    """JS ``===``: same type and value; arrays and objects are never identical across parses."""
    t = type(expected)
    if t in _NUM:
        return lambda v: type(v) in _NUM and v == expected
    if t is list or isinstance(expected, Mapping):
        return _never
    return lambda v: type(v) is t and v == expected


def _includes(values: list, insensitive: bool) -> Test:
    """JS ``values.includes(v)`` (or its case-folded form); an array attribute matches if any
    element does."""
    fold = str.lower if insensitive else str
    strs = frozenset(fold(x) for x in values if type(x) is str)
    nums = frozenset(x for x in values if type(x) in _NUM)
    consts = [x for x in values if x is None or type(x) is bool]

    def scalar(v: Any) -> bool:
        t = type(v)
        if t is str:
            return fold(v) in strs
        if t in _NUM:
            return v in nums
        return (v is None or t is bool) and any(v is c for c in consts)

    def test(v: Any) -> bool:
        t = type(v)
        if t is str:
            return fold(v) in strs
        if t is list:
            return any(map(scalar, v))
        return scalar(v)
    return test


# --- the compiler -----------------------------------------------------------------------------

class _Compiler:
    def __init__(self, saved_groups: Mapping | None, strict: bool) -> None:
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
            if key == "$and":
                return _all_of(tests)
            return _any_of(tests) if key == "$or" else _negate(_any_of(tests))
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
        if isinstance(arg, Mapping):
            self.check(not any(str(k).startswith("$") for k in arg), path,
                       "mixes operators with plain keys (an object with plain keys is compared literally)")
        self.check(arg is None or isinstance(arg, (str, int, float, list, Mapping)), path, "not a JSON value")
        return _literal(arg, insensitive)

    def operator(self, op: str, arg: Any, path: str) -> Test:
        build = _OPERATORS.get(op)
        if build is None:
            self.check(False, path, f"unknown operator {op}")
            return _never  # GrowthBook: an unknown operator never matches
        return build(self, arg, path)

    def scalar_list(self, arg: Any, path: str) -> bool:
        self.check(isinstance(arg, list), path, "needs a list")
        for i, x in enumerate(arg if isinstance(arg, list) else ()):
            self.check(x is None or type(x) in (str, bool, int, float), f"{path}[{i}]",
                       "list items must be strings, numbers, booleans or null")
        return isinstance(arg, list)


def _op_compare(fn: Callable[[Any, Any], bool]) -> Callable[..., Test]:
    def build(comp: _Compiler, arg: Any, path: str) -> Test:
        comp.check(type(arg) in (str, int, float), path, "needs a number or a string")
        expected = _primitive(arg)
        if type(expected) in _NUM:
            return lambda v: fn(v, expected) if type(v) in _NUM else _relational(fn, v, expected)
        if type(expected) is str:
            key = _u16(expected)
            return lambda v: fn(_u16(v), key) if type(v) is str else _relational(fn, v, expected)
        return lambda v: _relational(fn, v, expected)
    return build


def _op_version(fn: Callable[[str, str], bool]) -> Callable[..., Test]:
    def build(comp: _Compiler, arg: Any, path: str) -> Test:
        comp.check(type(arg) in (str, int, float) and arg != "", path, "needs a version string")
        expected = _padded_version(arg)
        return lambda v: fn(_padded_version(v), expected)
    return build


def _op_eq(negate: bool) -> Callable[..., Test]:
    def build(comp: _Compiler, arg: Any, path: str) -> Test:
        comp.check(arg is None or type(arg) in (str, bool, int, float), path,
                   "needs a string, number, boolean or null (arrays and objects never match)")
        test = _strict_equal_to(arg)
        return _negate(test) if negate else test
    return build


def _op_in(negate: bool, insensitive: bool) -> Callable[..., Test]:
    def build(comp: _Compiler, arg: Any, path: str) -> Test:
        if not comp.scalar_list(arg, path):
            return _never  # GrowthBook: not a list is false, for $nin too
        test = _includes(arg, insensitive)
        return _negate(test) if negate else test
    return build


def _op_group(negate: bool) -> Callable[..., Test]:
    def build(comp: _Compiler, arg: Any, path: str) -> Test:
        comp.check(type(arg) is str and arg, path, "needs a saved group id")
        members = comp.groups.get(_to_str(arg))
        test = _includes(members if isinstance(members, list) else [], False)  # unknown group: empty
        return _negate(test) if negate else test
    return build


def _op_exists(comp: _Compiler, arg: Any, path: str) -> Test:
    comp.check(type(arg) is bool or (type(arg) is int and arg in (0, 1)), path, "needs true or false")
    return _is_not_none if _truthy(arg) else _is_none


def _op_not(comp: _Compiler, arg: Any, path: str) -> Test:
    return _negate(comp.value(arg, path))


def _op_size(comp: _Compiler, arg: Any, path: str) -> Test:
    if not _is_operator_object(arg):
        comp.check(type(arg) in _NUM and arg >= 0 and float(arg).is_integer(), path,
                   'needs a non-negative integer or an operator object such as {"$gt": 2}')
    inner = comp.value(arg, path)
    return lambda v: type(v) is list and inner(len(v))


def _op_elem_match(comp: _Compiler, arg: Any, path: str) -> Test:
    if _is_operator_object(arg):
        check = comp.value(arg, path)  # operators test each element itself
    else:
        comp.check(arg != {}, path, "needs a non-empty object")
        check = comp.condition(arg, path)  # plain keys test each element's fields
    # GrowthBook skips falsy elements (0, "", false, null) before testing them
    return lambda v: type(v) is list and any(_truthy(x) and check(x) for x in v)


def _op_all(insensitive: bool) -> Callable[..., Test]:
    def build(comp: _Compiler, arg: Any, path: str) -> Test:
        comp.check(isinstance(arg, list), path, "needs a list")
        if not isinstance(arg, list):
            return _never
        tests = [comp.value(x, f"{path}[{i}]", insensitive) for i, x in enumerate(arg)]
        return lambda v: type(v) is list and all(any(map(t, v)) for t in tests)
    return build


def _op_regex(flags: int) -> Callable[..., Test]:
    def build(comp: _Compiler, arg: Any, path: str) -> Test:
        comp.check(type(arg) is str, path, "needs a regular expression string")
        try:
            search = re.compile(arg, flags).search  # compiled once, here
        except (re.error, TypeError, ValueError, OverflowError, RecursionError) as exc:
            comp.check(False, path, f"invalid regular expression: {exc}")
            return _never  # GrowthBook: an invalid regex never matches
        return lambda v: (search(v) if type(v) is str else search(_to_str(v))) is not None
    return build


def _op_type(comp: _Compiler, arg: Any, path: str) -> Test:
    comp.check(type(arg) is str and arg in _TYPE_NAMES, path, f"must be one of {', '.join(sorted(_TYPE_NAMES))}")
    return lambda v: _js_type(v) == arg


_OPERATORS: dict[str, Callable[..., Test]] = {
    "$eq": _op_eq(False), "$ne": _op_eq(True),
    "$lt": _op_compare(lt), "$lte": _op_compare(le), "$gt": _op_compare(gt), "$gte": _op_compare(ge),
    "$veq": _op_version(eq), "$vne": _op_version(ne), "$vlt": _op_version(lt),
    "$vlte": _op_version(le), "$vgt": _op_version(gt), "$vgte": _op_version(ge),
    "$in": _op_in(False, False), "$nin": _op_in(True, False),
    "$ini": _op_in(False, True), "$nini": _op_in(True, True),
    "$inGroup": _op_group(False), "$notInGroup": _op_group(True),
    "$all": _op_all(False), "$alli": _op_all(True),
    "$exists": _op_exists, "$not": _op_not, "$size": _op_size, "$elemMatch": _op_elem_match,
    "$regex": _op_regex(0), "$regexi": _op_regex(re.IGNORECASE), "$type": _op_type,
}


# --- public API -------------------------------------------------------------------------------

def compile_condition(condition: dict, saved_groups: dict | None = None, *,
                      strict: bool = False) -> Callable[[Mapping], bool]:
    """Compile ``condition`` once into a fast ``attributes -> bool`` function.

    ``strict=False`` (default, evaluation time) is GrowthBook-lenient: it never raises, and a
    condition that GrowthBook cannot evaluate structurally compiles to "always false".
    ``strict=True`` first validates like :func:`validate_condition` and raises
    :class:`ConditionError`. Saved groups are bound now; recompile when they change.
    """
    try:
        test = _Compiler(saved_groups, strict).condition(condition, "$")
    except ConditionError:
        if strict:
            raise
        return _never
    except RecursionError:
        if strict:
            raise ConditionError("$", "condition is nested too deeply") from None
        return _never

    def evaluate(attributes: Mapping) -> bool:
        try:
            return test(attributes)
        except Exception:  # e.g. a cyclic attribute value: fail the condition, never the caller
            return False
    return evaluate


def validate_condition(condition: Any) -> None:
    """Raise :class:`ConditionError` (with the JSON path) unless ``condition`` is valid.

    Strict, for saving a condition: besides structural errors it rejects unknown operators,
    ``$in``/``$nin``/``$all`` that are not lists, malformed ``$size``/``$elemMatch``, bad or
    non-string regexes, non-boolean ``$exists``, unknown ``$type`` names, and similar parts that
    GrowthBook would silently evaluate as false.
    """
    compile_condition(condition, strict=True)


@lru_cache(maxsize=512)
def _compiled(condition_json: str, groups_json: str) -> Callable[[Mapping], bool]:
    return compile_condition(json.loads(condition_json), json.loads(groups_json))


def evaluate_condition(condition: Any, attributes: Mapping, saved_groups: dict | None = None) -> bool:
    """Evaluate once (lenient), reusing compiled conditions from a small LRU cache."""
    try:
        # Key order is kept (no sort_keys): it matters for object literals, compared as JSON text
        key = (json.dumps(condition), json.dumps(saved_groups))
    except (TypeError, ValueError):  # not JSON-serialisable: compile without caching
        return compile_condition(condition, saved_groups)(attributes)
    return _compiled(*key)(attributes)
