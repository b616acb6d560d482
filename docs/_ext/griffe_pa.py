"""A griffe extension that lets pa's reStructuredText-flavoured docstrings read well in MkDocs.

pa's docstrings follow the Sphinx conventions of pytest and pluggy (``:param x:``, ``:class:`Trainer```,
``Example::`` before a code block); griffe parses the ``:param:`` fields itself (``docstring_style: sphinx``). This
extension handles the rest while griffe loads the sources, without importing anything:

- Sphinx roles (``:class:``, ``:func:``, ``:meth:``, ``:data:``, ``:attr:``, ``:mod:``, ``:exc:``, ``:obj:``) become
  inline code that links to the object. A role naming a public pa object, or a bare name, must resolve to an object
  the API reference shows, so a typo or a renamed object fails the strict build; a role naming a private helper or
  another library's object is an *optional* cross-reference that stays plain code when there is nothing to link;
- a paragraph ending in ``::`` ends in ``:``, and the indented block after it renders as code, as in Sphinx;
- field lists (``:param x:``, ``:raises E:``, ``:return:``) move after the prose: griffe reads a field's
  description up to the next field, so a paragraph written after the fields would otherwise end up inside the last
  one (Sphinx ends a field list at a blank line);
- ``#:`` comment lines right above a module or class attribute become that attribute's docstring, as Sphinx's
  autodoc reads them.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|attr|mod|exc|obj|const):`(?P<tilde>~?)(?P<target>[^`]+)`")
_LITERAL_BLOCK = re.compile(r"(?m)(\S)::[ \t]*$")
_BARE_LITERAL_BLOCK = re.compile(r"(?m)^([ \t]*)::[ \t]*$")
_FIELD = re.compile(r"^:[a-zA-Z]+(?: [^:]+)?:")


def _fields_last(text: str) -> str:
    """Move field-list blocks (and their indented continuation paragraphs) after every other paragraph."""
    prose: list[str] = []
    fields: list[str] = []
    in_fields = False
    for block in re.split(r"\n[ \t]*\n", text):
        if _FIELD.match(block.lstrip("\n")):
            in_fields = True
        elif not (in_fields and block[:1].isspace()):
            in_fields = False
        (fields if in_fields else prose).append(block)
    return "\n\n".join(prose + fields)


def _resolve(obj: griffe.Object, target: str) -> str | None:
    """The full path ``target`` names as seen from ``obj``'s docstring, or None. As in Sphinx, a name inside a
    class means the class's member first (``:meth:`step``` in a scheduler's docstring), then a name in scope."""
    head, _, rest = target.partition(".")
    scope: griffe.Object | None = obj
    while scope is not None:
        if scope.is_class:
            try:
                if head in scope.all_members:
                    return f"{scope.path}.{target}"
            except Exception:  # a base class outside the loaded packages
                if head in scope.members:
                    return f"{scope.path}.{target}"
        scope = scope.parent
    try:
        path = obj.resolve(head)
    except Exception:  # griffe raises NameResolutionError (or a KeyError for odd names)
        return None
    return f"{path}.{rest}" if rest else path


def _link(obj: griffe.Object, target: str, short: bool) -> str:
    target = target.strip().removesuffix("()")
    shown = target.rsplit(".", 1)[-1] if short else target
    resolved = _resolve(obj, target)
    identifier = resolved or target
    # A role naming a public object of pa must resolve to something the reference shows, and so must a bare name
    # (it can only mean a name in scope, so an unresolved one is a typo); a role naming a private helper or another
    # library's object may stay plain code.
    public_pa = identifier.startswith("pa_") and not any(part.startswith("_") for part in identifier.split("."))
    required = public_pa or (resolved is None and "." not in target)
    code = f"<code>{html.escape(shown)}</code>"
    return f'<autoref identifier="{html.escape(identifier)}"{"" if required else " optional"}>{code}</autoref>'


def rewrite(obj: griffe.Object, text: str) -> str:
    """The docstring ``text`` of ``obj`` with Sphinx roles and literal-block markers turned into Markdown."""
    text = _ROLE.sub(lambda m: _link(obj, m["target"], bool(m["tilde"])), text)
    text = _BARE_LITERAL_BLOCK.sub("", text)
    return _fields_last(_LITERAL_BLOCK.sub(r"\1:", text))


def _comment_docstring(obj: griffe.Object, lineno: int | None) -> str | None:
    if lineno is None:
        return None
    try:
        lines = obj.module.lines
    except Exception:
        return None
    comments: list[str] = []
    index = lineno - 2  # the line above the assignment, 0-based
    while index >= 0 and lines[index].lstrip().startswith("#:"):
        comments.insert(0, lines[index].lstrip()[2:].strip())
        index -= 1
    return " ".join(comments) or None


class PaDocstrings(griffe.Extension):
    """Rewrite docstrings as they are loaded; see the module docstring."""

    def on_attribute_instance(self, *, node: Any, attr: griffe.Attribute, **kwargs: Any) -> None:
        if attr.docstring is None:
            comment = _comment_docstring(attr, getattr(node, "lineno", None))
            if comment is not None:
                attr.docstring = griffe.Docstring(comment, parent=attr)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._rewrite_all(pkg)

    def _rewrite_all(self, obj: griffe.Object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj, obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias and member.parent is obj:
                self._rewrite_all(member)
