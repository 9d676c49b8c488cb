"""JSON bodies: DRF's parser, with more ways a body can be malformed.

``json.loads`` raises RecursionError, not ValueError, for a body nested deeper
than the interpreter's recursion limit (``[[[[…``, a few hundred kilobytes): that
is a malformed request (400), not a server error.

JSON can carry texts that nothing downstream can hold: ``\u0000`` (PostgreSQL's text refuses NUL) and
a lone surrogate such as ``\ud800`` (no UTF-8 encoding: the database driver and the JSON renderer both
fail on it). The parser of the REST API's bodies refuses them wherever they are, keys included, with a
400 naming the member (``tenants[0].external_id``). The crypto endpoints parse their own bodies (the hot
path) and check the members they use (``keycore.api.crypto``).
"""

from __future__ import annotations

import json

from rest_framework import exceptions, parsers

from keycore import errors
from keycore.services.crypto import text_problem

NESTED_TOO_DEEPLY = "The body is nested too deeply."


def loads(body: bytes):
    """``json.loads`` raising ParseError for anything that is not a JSON document."""
    try:
        return json.loads(body)
    except ValueError as exc:
        raise exceptions.ParseError(f"The body is not valid JSON: {exc}.") from None
    except RecursionError:
        raise exceptions.ParseError(NESTED_TOO_DEEPLY) from None


def unstorable_text(data) -> tuple[str, str] | None:
    """The first (member path, problem) of a text in ``data``, key or value, that cannot be stored; or None."""
    todo = [("", data)]
    while todo:
        path, value = todo.pop()
        if type(value) is str:
            if not value.isascii() or "\x00" in value:
                problem = text_problem(value)
                if problem:
                    return path or "body", problem
        elif type(value) is dict:
            for key, item in value.items():
                problem = text_problem(key) if not key.isascii() or "\x00" in key else None
                if problem:
                    return path or "body", f"A member name: {problem}"
                todo.append((f"{path}.{key}" if path else key, item))
        elif type(value) is list:
            todo.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


def refuse_unstorable_text(data) -> None:
    found = unstorable_text(data)
    if found is not None:
        path, problem = found
        raise errors.InvalidInput(f"{path}: {problem}", field_errors={path: [problem]})


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(NESTED_TOO_DEEPLY) from None
        refuse_unstorable_text(data)
        return data
