"""Griffe extension: read the Sphinx roles of seqbatch's docstrings as links.

The docstrings cross-reference with Sphinx roles (``:class:`StreamBatcher```). Griffe's
Google parser knows no roles: it would print them as text, and a role at the start of a
Returns section would even be split at its colon. Once the package is loaded, this extension
rewrites every role into a Markdown cross-reference, ``[StreamBatcher][seqbatch.batcher.StreamBatcher]``,
resolving the name in the scope of the object whose docstring holds it, as Python would.
A name that does not resolve is kept as the reference, so that mkdocs-autorefs reports it
and ``mkdocs build --strict`` fails rather than publish a dead reference.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|meth|func|attr|mod|obj|exc|data):`(~?)([\w.]+)`")


def _objects(obj: griffe.Object) -> Any:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)


class SphinxRoles(griffe.Extension):
    """Rewrites ``:role:`name``` into ``[name][resolved.path]`` in every docstring."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _objects(pkg):
            if obj.docstring is None:
                continue

            def link(m: re.Match[str], obj: griffe.Object = obj) -> str:
                short, name = m[1], m[2]
                shown = name.rsplit(".", 1)[-1] if short else name
                try:
                    target = obj.resolve(name)
                except griffe.NameResolutionError:
                    target = name
                return f"[`{shown}`][{target}]"

            obj.docstring.value = ROLE.sub(link, obj.docstring.value)
