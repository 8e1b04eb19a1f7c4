"""Strict value encoding between the sandboxed child (untrusted) and the service (trusted).

The child reports the *raw values* its tests produced; the service compares them with expected
values the child never saw. The encoding is JSON with one-key tag objects:

=====================  ======================================================
value                   encoding
=====================  ======================================================
None, bool, str         JSON null / true / false / string
int                     JSON number if |x| < 2**63, else ``{"I": hex}``
float                   JSON number (``NaN``/``Infinity`` allowed)
list                    JSON array
tuple / set / frozenset ``{"t": [...]}`` / ``{"s": [...]}`` / ``{"fs": [...]}``
dict                    ``{"d": [[k, v], ...]}``
bytes / bytearray       ``{"b": base64}`` / ``{"ba": base64}``
complex                 ``{"c": [re, im]}``
OrderedDict, Counter,   ``{"od": ...}``, ``{"ct": ...}``, ``{"dd": ...}`` (items) and
defaultdict, deque      ``{"dq": [...]}``
Decimal / Fraction      ``{"dec": str}`` / ``{"fr": [num, den]}``
re.Match                ``{"m": [group0, start, end]}``
numpy scalar, 0-d array its ``.item()`` (a Python scalar, encoded as above)
anything else           ``{"o": type name}`` (an `Opaque` value on the host)
=====================  ======================================================

`encode` (child side) checks exact types (``type(x) is int``, never ``isinstance``), so a
subclass with a rigged ``__eq__`` becomes `Opaque` and compares unequal to everything. `decode`
(host side) parses with `json` and rebuilds only genuine built-in types, with depth and size
limits; anything malformed raises `DecodeError`, and so do sets and dicts whose keys collide
in one hash (a forged record of such keys would take quadratic time to rebuild and stall the
service for every other run) and integers too long to compare cheaply. A program that tampers with the encoder in its
own process can only choose which plain value it reports — the same as returning that value.
"""

from __future__ import annotations

import base64
import collections
import decimal
import fractions
import json
import re

MAX_DEPTH = 64
MAX_ITEMS = 2_000_000
MAX_INT_HEX = 100_000  # hex digits of a reported integer (400,000 bits)
MAX_FRACTION_HEX = 10_000  # of a Fraction's numerator or denominator (gcd is quadratic)
MAX_SAME_HASH = 64  # keys of one set or dict with one hash: never by chance, only by design
_INT64 = 1 << 63

_type = type
_len = len
_MATCH = type(re.match("", ""))


class EncodeError(ValueError):
    """The value is too deep or too large to report."""


class DecodeError(ValueError):
    """The reported data is not a well-formed encoding."""


class Opaque:
    """A value of a type the encoding does not carry: truthy, equal only to itself."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<{self.type_name} object>"


class MatchValue:
    """A `re.Match` as reported by the child: truthy; equal to a match of the same text and span."""

    __slots__ = ("group", "span")

    def __init__(self, group: str, span: tuple[int, int]):
        self.group = group
        self.span = span

    def __eq__(self, other) -> bool:
        if type(other) is not MatchValue:
            return NotImplemented
        return self.group == other.group and self.span == other.span

    def __hash__(self) -> int:
        return hash((self.group, self.span))

    def __repr__(self) -> str:
        return f"<re.Match object; span={self.span}, match={self.group!r}>"


class ExpectedError:
    """An expected *exception* (the reference raised): matches a raise of the same type."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"raises {self.type_name}"


# ---------------------------------------------------------------------------------------------
# Child side.
# ---------------------------------------------------------------------------------------------


def _type_name(x) -> str:
    try:
        t = _type(x)
        return f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__qualname__
    except Exception:  # noqa: BLE001 - a hostile metaclass
        return "object"


def to_jsonable(x, _depth: int = 0, _budget: list | None = None):
    """The JSON-able tagged form of `x` (exact type checks; raises `EncodeError`)."""
    if _budget is None:
        _budget = [MAX_ITEMS]
    _budget[0] -= 1
    if _budget[0] < 0:
        raise EncodeError(f"the value has more than {MAX_ITEMS} elements")
    if _depth > MAX_DEPTH:
        raise EncodeError(f"the value is nested deeper than {MAX_DEPTH} levels")
    t = _type(x)
    if x is None or t is bool or t is str:
        return x
    if t is int:
        return x if -_INT64 < x < _INT64 else {"I": hex(x)}
    if t is float:
        return x
    d = _depth + 1
    if t is list:
        return [to_jsonable(v, d, _budget) for v in x]
    if t is tuple:
        return {"t": [to_jsonable(v, d, _budget) for v in x]}
    if t is set or t is frozenset:
        return {"s" if t is set else "fs": [to_jsonable(v, d, _budget) for v in x]}
    if t is dict:
        return {
            "d": [[to_jsonable(k, d, _budget), to_jsonable(v, d, _budget)] for k, v in x.items()]
        }
    if t is bytes or t is bytearray:
        return {"b" if t is bytes else "ba": base64.b64encode(bytes(x)).decode("ascii")}
    if t is complex:
        return {"c": [x.real, x.imag]}
    if t is collections.OrderedDict or t is collections.Counter or t is collections.defaultdict:
        tag = {collections.OrderedDict: "od", collections.Counter: "ct"}.get(t, "dd")
        return {
            tag: [[to_jsonable(k, d, _budget), to_jsonable(v, d, _budget)] for k, v in x.items()]
        }
    if t is collections.deque:
        return {"dq": [to_jsonable(v, d, _budget) for v in x]}
    if t is decimal.Decimal:
        return {"dec": str(x)}
    if t is fractions.Fraction:
        return {
            "fr": [to_jsonable(x.numerator, d, _budget), to_jsonable(x.denominator, d, _budget)]
        }
    if t is _MATCH:
        return {"m": [to_jsonable(x.group(0), d, _budget), x.start(), x.end()]}
    item = _numpy_item(x, t)
    if item is not _NONE:
        return to_jsonable(item, d, _budget)
    return {"o": _type_name(x)}


_NONE = object()


def _numpy_item(x, t):
    """The Python scalar of a numpy scalar or 0-d array (what ``==`` and ``bool`` of it
    give in an official harness: ``np.int64(2) == 2``, ``not np.bool_(False)``), else `_NONE`.
    Whatever a program's object claims, only the exact types above can come out of it."""
    try:
        if t.__module__ != "numpy" or x.ndim != 0:
            return _NONE
        item = x.item()
    except Exception:  # noqa: BLE001 - not numpy's, or a hostile attribute: stays opaque
        return _NONE
    return _NONE if _type(item) is t else item


def encode(x) -> str:
    """`x` as one line of JSON (child side)."""
    return json.dumps(to_jsonable(x), separators=(",", ":"), allow_nan=True)


# ---------------------------------------------------------------------------------------------
# Host side.
# ---------------------------------------------------------------------------------------------


def _hashable(v):
    try:
        hash(v)
    except TypeError as e:
        raise DecodeError(f"unhashable key/element of type {type(v).__name__}") from e
    return v


def _few_collisions(keys: list) -> list:
    """`keys` if no more than `MAX_SAME_HASH` of them share a hash, else `DecodeError`."""
    if len(keys) > MAX_SAME_HASH:
        counts = collections.Counter(hash(k) for k in keys)
        if max(counts.values()) > MAX_SAME_HASH:
            raise DecodeError(f"more than {MAX_SAME_HASH} keys of one set or dict share a hash")
    return keys


def _int_hex(val, limit: int):
    if type(val) is not str or len(val) > limit + 3 or not re.fullmatch(r"-?0x[0-9a-f]+", val):
        raise DecodeError(f"bad big integer (at most {limit} hex digits)")
    return int(val, 16)


def _items(obj, depth, budget):
    if type(obj) is not list:
        raise DecodeError("items must be a list of pairs")
    out = []
    for pair in obj:
        if type(pair) is not list or len(pair) != 2:
            raise DecodeError("items must be a list of pairs")
        out.append(
            (
                _hashable(from_jsonable(pair[0], depth, budget)),
                from_jsonable(pair[1], depth, budget),
            )
        )
    _few_collisions([k for k, _ in out])
    return out


def _seq(obj, depth, budget):
    if type(obj) is not list:
        raise DecodeError("a tagged sequence must hold a list")
    return [from_jsonable(v, depth, budget) for v in obj]


def from_jsonable(obj, _depth: int = 0, _budget: list | None = None):
    """Rebuild a value from its tagged JSON form, creating only genuine built-in types."""
    if _budget is None:
        _budget = [MAX_ITEMS]
    _budget[0] -= 1
    if _budget[0] < 0:
        raise DecodeError("too many elements")
    if _depth > MAX_DEPTH + 2:
        raise DecodeError("nested too deep")
    t = type(obj)
    if obj is None or t is bool or t is str or t is int or t is float:
        return obj
    d = _depth + 1
    if t is list:
        return [from_jsonable(v, d, _budget) for v in obj]
    if t is not dict or len(obj) != 1:
        raise DecodeError("expected a one-key tag object")
    ((tag, val),) = obj.items()
    if tag == "I":
        return _int_hex(val, MAX_INT_HEX)
    if tag == "t":
        return tuple(_seq(val, d, _budget))
    if tag in ("s", "fs"):
        keys = _few_collisions([_hashable(v) for v in _seq(val, d, _budget)])
        return set(keys) if tag == "s" else frozenset(keys)
    if tag == "d":
        return dict(_items(val, d, _budget))
    if tag == "od":
        return collections.OrderedDict(_items(val, d, _budget))
    if tag == "ct":
        return collections.Counter(dict(_items(val, d, _budget)))
    if tag == "dd":
        return collections.defaultdict(None, _items(val, d, _budget))
    if tag == "dq":
        return collections.deque(_seq(val, d, _budget))
    if tag in ("b", "ba"):
        if type(val) is not str:
            raise DecodeError("bytes must be base64 text")
        try:
            raw = base64.b64decode(val, validate=True)
        except ValueError as e:
            raise DecodeError("bad base64") from e
        return raw if tag == "b" else bytearray(raw)
    if tag == "c":
        parts = _seq(val, d, _budget)
        if len(parts) != 2 or not all(type(p) in (int, float) for p in parts):
            raise DecodeError("bad complex")
        return complex(parts[0], parts[1])
    if tag == "dec":
        if type(val) is not str or len(val) > 10_000:
            raise DecodeError("bad decimal")
        try:
            return decimal.Decimal(val)
        except decimal.InvalidOperation as e:
            raise DecodeError("bad decimal") from e
    if tag == "fr":
        if type(val) is not list or len(val) != 2:
            raise DecodeError("bad fraction")
        parts = [
            _int_hex(p["I"], MAX_FRACTION_HEX) if type(p) is dict and list(p) == ["I"] else p
            for p in val
        ]
        if not all(type(p) is int for p in parts) or parts[1] == 0:
            raise DecodeError("bad fraction")
        return fractions.Fraction(parts[0], parts[1])
    if tag == "m":
        if type(val) is not list or len(val) != 3 or type(val[0]) is not str:
            raise DecodeError("bad match")
        if type(val[1]) is not int or type(val[2]) is not int:
            raise DecodeError("bad match")
        return MatchValue(val[0], (val[1], val[2]))
    if tag == "o":
        if type(val) is not str:
            raise DecodeError("bad opaque type name")
        return Opaque(val[:200])
    raise DecodeError(f"unknown tag {tag[:20]!r}")


def decode(text: str | bytes):
    """Parse one encoded value (host side); raises `DecodeError`."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise DecodeError("not JSON") from e
    return from_jsonable(obj)


def short_repr(value, limit: int = 300) -> str:
    """``repr`` of a decoded value, truncated to `limit` characters."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 15] + "... [truncated]"
