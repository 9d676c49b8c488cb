"""Content negotiation that never answers 406: the API speaks JSON, whatever ``Accept`` says.

A client asking for ``application/problem+json`` only, or a browser asking for
HTML, gets JSON (problems as ``application/problem+json``) rather than an error
about the error format. Views with several renderers (the schema: JSON or YAML)
still honour ``Accept`` when it names one of them.
"""

from __future__ import annotations

from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation


class JsonFirstNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except exceptions.NotAcceptable:
            return renderers[0], renderers[0].media_type
