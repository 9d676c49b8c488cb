"""JSON bodies: DRF's parser, with one more way a body can be malformed.

``json.loads`` raises RecursionError, not ValueError, for a body nested deeper
than the interpreter's recursion limit (``[[[[…``, a few hundred kilobytes): that
is a malformed request (400), not a server error.
"""

from __future__ import annotations

import json

from rest_framework import exceptions, parsers

NESTED_TOO_DEEPLY = "The body is nested too deeply."


def loads(body: bytes):
    """``json.loads`` raising ParseError for anything that is not a JSON document."""
    try:
        return json.loads(body)
    except ValueError as exc:
        raise exceptions.ParseError(f"The body is not valid JSON: {exc}.") from None
    except RecursionError:
        raise exceptions.ParseError(NESTED_TOO_DEEPLY) from None


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(NESTED_TOO_DEEPLY) from None
