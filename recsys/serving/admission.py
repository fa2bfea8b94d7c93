"""Admission of a JSON request body: linear, bounded checks before anything builds objects from it.

Parsing is where a hostile body costs. Pydantic turns 90,000 unknown keys into 90,000 errors: 0.3 s inside one C
call that holds the GIL, so even in a worker thread it would freeze the event loop. The old repeated-key check was
quadratic: one 1 MB body held the loop for 177 s. So a body is first measured with a few byte-level passes
(``bytes.count``/``replace``/``split``, memchr speed, at most a few thousand small objects). A body with more
keys, values and strings than any valid request to its route can have is refused before any parser sees it. What
passes is small, so validating it and looking for a repeated key take a few milliseconds at most. A valid body is
parsed once: the request it validates to is what the API method gets (recsys/serving/parse_once.py). Bodies over
``INLINE_BYTES`` are checked in a worker thread anyway (see :class:`serving.errors.CleanErrors`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from pydantic import BaseModel, ValidationError

INLINE_BYTES = 1_024  # a body this small is checked on the event loop: at most ~250 tokens, well under 1 ms
ROOM = 64  # tokens allowed above the most a valid request has, so a request with a few stray fields still gets
#            pydantic's precise message ("colour: Extra inputs are not permitted") instead of the size refusal
SHOWN_ERRORS = 5
SHOWN_CHARS = 40


def _most_values(schema: dict[str, Any], defs: dict[str, Any]) -> int:
    """The most JSON keys and values (containers included) a document valid against ``schema`` can hold.

    Public request schemas must be bounded (objects forbid unknown keys, arrays have ``maxItems``); one that is
    not fails here, at start-up, rather than opening the service to unbounded bodies.
    """
    if "$ref" in schema:
        return _most_values(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in schema:
        return max(_most_values(branch, defs) for branch in schema["anyOf"])
    kind = schema.get("type")
    if kind == "object" and schema.get("additionalProperties") is False:
        return 1 + sum(1 + _most_values(p, defs) for p in schema.get("properties", {}).values())
    if kind == "array" and "maxItems" in schema:
        return 1 + schema["maxItems"] * _most_values(schema.get("items", {}), defs)
    if kind in ("object", "array"):
        raise ValueError(f"request schema {schema.get('title', '')!r} is unbounded: forbid extra keys, give maxItems")
    return 1


def _outside_strings(body: bytes, limit: int) -> bytes | None:
    """What of ``body`` lies outside its strings, or None when it holds more than ``limit`` strings, or more
    than ``limit`` commas, colons and opening brackets outside strings. A valid document with N keys and values
    has at most 2N of each (a string is a key or a value; a key brings a colon and at most one comma, a value at
    most one comma and one bracket).
    """
    text = body.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in body else body  # escaped quotes are content
    if text.count(b'"') > 2 * limit:
        return None
    outside = b"".join(text.split(b'"')[::2])  # at most 2 * limit + 1 pieces
    return None if sum(outside.count(c) for c in (b",", b":", b"[", b"{")) > limit else outside


def _keys_given(value: Any) -> int:
    """How many JSON keys a validated request was given, nested models and lists of them included: its models'
    ``model_fields_set``. Every object of a bounded request schema is a model that forbids unknown keys
    (:func:`_most_values`), so each distinct key of each object is one field set."""
    if isinstance(value, BaseModel):
        return sum(1 + _keys_given(getattr(value, name)) for name in value.model_fields_set)
    if isinstance(value, list):
        return sum(_keys_given(item) for item in value)
    return 0


def _short(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


class ErrorLine(TypedDict):
    """What :func:`describe` reads of an error: pydantic's ``ErrorDetails`` has these keys and more."""

    loc: tuple[int | str, ...]
    msg: str


def describe(errors: Sequence[ErrorLine]) -> str:
    """Pydantic's errors as one bounded line a person can act on: 'top_k: Input should be ...; foo: ...'.

    Locations are the sender's keys, so each is cut to ``SHOWN_CHARS`` and only the first ``SHOWN_ERRORS`` are
    listed: the answer to a hostile body is never an echo of it.
    """
    parts = []
    for err in errors[:SHOWN_ERRORS]:
        loc = ".".join(_short(str(p)) for p in err.get("loc", ())) or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = f"; and {len(errors) - SHOWN_ERRORS} more" if len(errors) > SHOWN_ERRORS else ""
    return "invalid request: " + "; ".join(parts) + more


def _repeated_key(body: bytes) -> str | None:
    """The first key that repeats within one JSON object of ``body`` (linear: one dict per object, and the
    repeated key is looked for once); None when there is none or ``body`` is not JSON."""
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        unique = dict(items)
        if not found and len(unique) < len(items):
            seen: set[str] = set()
            for key, _ in items:
                if key in seen:
                    found.append(key)
                    break
                seen.add(key)
        return unique

    try:
        json.loads(body, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return None
    return found[0] if found else None


@dataclass(frozen=True)
class Admission:
    """The checks for one route: its input model, and the most tokens a valid body for it can have."""

    model: type[BaseModel]
    limit: int

    @classmethod
    def of(cls, model: type[BaseModel]) -> Admission:
        schema = model.model_json_schema()
        return cls(model, 2 * _most_values(schema, schema.get("$defs", {})) + ROOM)

    def admit(self, body: bytes) -> BaseModel | str:
        """``body`` as a validated request (an instance of :attr:`model`), or why it is not one (the 400 message).

        Checked as BentoML would parse it (an empty body is ``{}``). Pydantic's parser silently keeps the last of
        repeated keys, so a body that validates is also checked for them: each key outside strings brings one
        colon, so a body with more colons there than keys its request was given repeats one (no second parse;
        only then is the body parsed again, to name the key).
        """
        outside = _outside_strings(body, self.limit)
        if outside is None:
            return (f"invalid request: body: more JSON keys and values than any valid request has (at most "
                    f"{(self.limit - ROOM) // 2}); send only the documented fields")
        try:
            request = self.model.model_validate_json(body or b"{}")
        except ValidationError as exc:
            return describe(exc.errors(include_url=False, include_context=False, include_input=False))
        if outside.count(b":") > _keys_given(request) and (key := _repeated_key(body)) is not None:
            return (f"invalid request: body: key '{_short(key)}' appears more than once in one JSON object; "
                    "send each field once")
        return request
