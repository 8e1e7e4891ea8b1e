"""The fenced code blocks of the documentation pages, as tests/test_docs.py runs them."""

from __future__ import annotations

import re
from dataclasses import dataclass

FENCE = re.compile(r"^(?P<indent> *)(?P<ticks>```+|~~~+)\s*(?P<lang>[\w+-]*)")


SKIP = re.compile(r"^\s*<!--\s*skip:\s*(?P<reason>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    lang: str
    line: int  # 1-based line of the first line of code, in the page
    code: str
    skip: str | None  # the reason given in a skip marker, or None


def blocks(text: str) -> list[Block]:
    """Every fenced block of a markdown text, with its indent removed."""
    out: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, ticks = len(m["indent"]), m["ticks"]
        before = next((s for s in reversed(lines[:i]) if s.strip()), "")
        skip = SKIP.match(before)
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != ticks:
            body.append(lines[j][indent:])
            j += 1
        out.append(Block(m["lang"], i + 2, "\n".join(body) + "\n", skip and skip["reason"]))
        i = j + 1
    return out
