"""A provider's setup help (plain text from ``KeyProvider.setup_help``) cut into prose and code blocks,
so that each policy or trust document can be shown, and copied, on its own."""

from __future__ import annotations

from django import template

register = template.Library()

_OPENERS = {"[": "]", "{": "}"}


@register.filter
def setup_blocks(text: str) -> list[tuple[str, str]]:
    """[("text" | "code", block), ...]: a code block is a JSON document that starts with "[" or "{"
    alone at the start of a line and ends at its closing bracket, also at the start of a line."""
    blocks: list[tuple[str, str]] = []
    prose: list[str] = []
    closer = None
    code: list[str] = []

    def flush_prose() -> None:
        paragraph = "\n".join(prose).strip()
        if paragraph:
            blocks.extend(("text", p.strip()) for p in paragraph.split("\n\n") if p.strip())
        prose.clear()

    for line in (text or "").splitlines():
        if closer is None and line in _OPENERS:
            flush_prose()
            closer, code = _OPENERS[line], [line]
        elif closer is not None:
            code.append(line)
            if line == closer:
                blocks.append(("code", "\n".join(code)))
                closer = None
        else:
            prose.append(line)
    if closer is not None:  # never closed: not a document after all
        prose[:0] = code
    flush_prose()
    return blocks
