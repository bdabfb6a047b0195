"""A griffe extension (mkdocs.yml, mkdocstrings ``extensions:``): dann's docstrings cite each other
with Sphinx roles, ``:func:`train```, ``:class:`~dann.errors.ConfigError```; this turns each into a
cross-reference to the object's entry in the API reference.

A name is resolved as Python would in the docstring's scope (the module's imports included), so
``:meth:`DAMethod.logs``` in ``dann/methods/base.py`` links ``dann.methods.base.DAMethod.logs``.
A name of dann that does not resolve stays a cross-reference to itself, which autorefs cannot
find: ``mkdocs build --strict`` then fails, naming it. Names outside dann (``torch.nn.Module``)
become plain code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):`(~?)([\w.]+)`")
PACKAGE = "dann"


def _exists(root: griffe.Module, path: str) -> bool:
    if path == root.path:
        return True
    if not path.startswith(root.path + "."):
        return False
    try:
        root.get_member(path[len(root.path) + 1:])
        return True
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return False


def resolve(obj: griffe.Object, root: griffe.Module, name: str) -> str | None:
    """The full path ``name`` means in ``obj``'s docstring, None when outside dann or unresolvable."""
    if _exists(root, name):
        return name
    head, _, rest = name.partition(".")
    scope: Any = obj
    while scope is not None:
        try:
            base = scope.resolve(head)
        except (griffe.NameResolutionError, KeyError, ValueError, AttributeError):
            base = None
        if base:
            full = f"{base}.{rest}" if rest else base
            if _exists(root, full):
                return full
        scope = scope.parent
    # a member named from outside its class (``:meth:`losses``` in a module that defines DAMethod), or
    # a name its package re-exports: the one object of dann whose path ends so
    found = [p for p in _paths(root) if p == name or p.endswith("." + name)]
    if len(found) > 1:  # several: the one in the docstring's own module
        found = [p for p in found if p.startswith(obj.module.path + ".")]
    return found[0] if len(found) == 1 else None


def _paths(root: griffe.Module) -> list[str]:
    out, stack = [], [root]
    while stack:
        obj = stack.pop()
        out.append(obj.path)
        stack += [m for m in obj.members.values() if not m.is_alias]
    return out


def rewrite(obj: griffe.Object, root: griffe.Module) -> None:
    if not obj.docstring:
        return

    def repl(m: re.Match) -> str:
        short, name = m.group(1), m.group(2)
        shown = name.rsplit(".", 1)[-1] if short else name
        full = resolve(obj, root, name)
        if full:
            return f"[`{shown}`][{full}]"
        if name.split(".")[0] == PACKAGE or not name.startswith(("torch", "numpy", "np.", "lightning", "pl.")):
            # not found in dann: left as a reference autorefs cannot resolve, so the strict build names it
            target = name if name.startswith(PACKAGE + ".") else f"{obj.path}.{name}"
            return f"[`{shown}`][{target}]"
        return f"`{shown}`"

    obj.docstring.value = ROLE.sub(repl, obj.docstring.value)


class SphinxRoles(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.path != PACKAGE:
            return
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            rewrite(obj, pkg)
            stack += [m for m in obj.members.values() if not m.is_alias]
