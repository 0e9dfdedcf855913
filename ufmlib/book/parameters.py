"""A notebook's ``parameters`` cell: the parameters it declares, their types and defaults.

Every notebook has one code cell tagged ``parameters`` (papermill injects the profile's values
after it). Each statement of that cell is an annotated assignment of a literal,
``name: type = default  # help``, so that a profile can be checked before any kernel starts:
:func:`parse_parameters` reads the cell with :mod:`ast` (no code runs) and
:meth:`Parameter.coerce` converts a profile's value to the declared type or rejects it.
Supported annotations: ``int``, ``float``, ``bool``, ``str``, ``list[T]``, ``tuple[T, ...]``,
``Literal[...]`` and unions with ``None`` (``T | None``).
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "ProfileError",
    "Parameter",
    "read_notebook",
    "parameters_cell",
    "parse_parameters",
    "notebook_parameters",
    "describe",
]


class ProfileError(ValueError):
    """A profile or a notebook's parameters cell is invalid; the message names what and where."""


def read_notebook(path: str | Path):
    """A notebook (``nbformat.NotebookNode``) from a jupytext text file or an ``.ipynb``."""
    import jupytext

    return jupytext.read(str(path))


def parameters_cell(nb, *, notebook: str = "?"):
    """The first code cell tagged ``parameters``; :class:`ProfileError` if there is none."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return cell
    raise ProfileError(f"notebook {notebook!r} has no code cell tagged 'parameters'")


@dataclass(frozen=True)
class Parameter:
    """One annotated assignment of a parameters cell: ``name: annotation = default  # help``."""

    name: str
    annotation: str
    default: Any
    help: str = ""
    node: ast.expr | None = field(default=None, repr=False, compare=False)

    def allowed(self) -> str:
        """The allowed values in words (for error messages)."""
        node = self.node
        if isinstance(node, ast.Subscript) and _subscript_base(node) == "Literal":
            return "one of " + ", ".join(repr(v) for v in _literal_choices(node))
        return self.annotation

    def coerce(self, value: Any) -> Any:
        """``value`` converted to the annotated type (``int`` to ``float``, tuples to lists).

        Raises :class:`TypeError` when ``value`` does not fit the annotation.
        """
        ok, out = _coerce(self.node, value)
        if not ok:
            raise TypeError(f"expected {self.allowed()}")
        return out


def _subscript_base(node: ast.Subscript) -> str:
    """The name subscripted by ``node``: ``"list"`` for ``list[int]``, ``"Literal"`` for ``typing.Literal[...]``."""
    base = node.value
    if isinstance(base, ast.Attribute):
        return base.attr
    if isinstance(base, ast.Name):
        return base.id
    return ""


def _literal_choices(node: ast.Subscript) -> list[Any]:
    """The values allowed by a ``Literal[...]`` annotation."""
    elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    return [ast.literal_eval(e) for e in elts]


_SCALARS = ("int", "float", "bool", "str")


def _check_annotation(node: ast.expr) -> None:
    """Raise :class:`ValueError` for annotations this module cannot check."""
    if isinstance(node, ast.Name) and node.id in _SCALARS:
        return
    if isinstance(node, ast.Constant) and node.value is None:
        return
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        _check_annotation(node.left)
        _check_annotation(node.right)
        return
    if isinstance(node, ast.Subscript):
        base = _subscript_base(node)
        if base == "Literal":
            _literal_choices(node)
            return
        if base == "list":
            _check_annotation(node.slice)
            return
        if base == "tuple" and isinstance(node.slice, ast.Tuple) and len(node.slice.elts) == 2 \
                and isinstance(node.slice.elts[1], ast.Constant) and node.slice.elts[1].value is Ellipsis:
            _check_annotation(node.slice.elts[0])
            return
    raise ValueError(
        f"unsupported annotation {ast.unparse(node)!r} (use int, float, bool, str, list[T], "
        "tuple[T, ...], Literal[...] or 'T | None')"
    )


def _coerce(node: ast.expr | None, value: Any) -> tuple[bool, Any]:
    """``(fits, converted)``: whether ``value`` fits the annotation ``node`` and the value converted to it."""
    if node is None:
        return True, value
    if isinstance(node, ast.Name):
        if node.id == "int":
            return isinstance(value, int) and not isinstance(value, bool), value
        if node.id == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return False, value
            return True, float(value)
        if node.id == "bool":
            return isinstance(value, bool), value
        if node.id == "str":
            return isinstance(value, str), value
    if isinstance(node, ast.Constant) and node.value is None:
        return value is None, value
    if isinstance(node, ast.BinOp):
        ok, out = _coerce(node.left, value)
        return (ok, out) if ok else _coerce(node.right, value)
    if isinstance(node, ast.Subscript):
        base = _subscript_base(node)
        if base == "Literal":
            choices = _literal_choices(node)
            return any(type(value) is type(c) and value == c for c in choices), value
        if base in ("list", "tuple"):
            if not isinstance(value, (list, tuple)):
                return False, value
            inner = node.slice if base == "list" else node.slice.elts[0]
            items = [_coerce(inner, v) for v in value]
            return all(ok for ok, _ in items), [v for _, v in items]
    return False, value


def parse_parameters(source: str, *, notebook: str = "?") -> dict[str, Parameter]:
    """The parameters declared in a parameters cell's ``source``.

    Every statement must be an annotated assignment of a literal, ``name: type = value``; the
    comment on its line is the help text. A default that does not fit its own annotation, an
    unannotated assignment or any other statement is a :class:`ProfileError`.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ProfileError(f"notebook {notebook!r}: the parameters cell is not valid Python ({exc.msg}, line {exc.lineno})") from None
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    for number, line in enumerate(source.splitlines(), start=1):
        if line.count("=") > 1:  # papermill's own parser (--help-notebook, injection) skips such lines
            raise ProfileError(f"notebook {notebook!r}: line {number} of the parameters cell has more than one '=' "
                               f"(papermill cannot read it; keep '=' out of the comment): {line.strip()!r}")
    params: dict[str, Parameter] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            name = stmt.target.id
            try:
                _check_annotation(stmt.annotation)
            except ValueError as exc:
                raise ProfileError(f"notebook {notebook!r}: parameter {name!r}: {exc}") from None
            try:
                default = ast.literal_eval(stmt.value)
            except ValueError:
                raise ProfileError(f"notebook {notebook!r}: the default of parameter {name!r} must be a literal") from None
            param = Parameter(name, ast.unparse(stmt.annotation), default, comments.get(stmt.end_lineno, ""), stmt.annotation)
            try:
                param = Parameter(name, param.annotation, param.coerce(default), param.help, stmt.annotation)
            except TypeError as exc:
                raise ProfileError(f"notebook {notebook!r}: the default {default!r} of parameter {name!r} does not fit its annotation ({exc})") from None
            if name in params:
                raise ProfileError(f"notebook {notebook!r}: parameter {name!r} is declared twice")
            params[name] = param
        elif isinstance(stmt, ast.Assign):
            names = ", ".join(ast.unparse(t) for t in stmt.targets)
            raise ProfileError(f"notebook {notebook!r}: parameter {names} has no type annotation (write `name: type = value  # help`)")
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            continue
        else:
            raise ProfileError(f"notebook {notebook!r}: the parameters cell may only hold annotated assignments (line {stmt.lineno})")
    return params


def notebook_parameters(path: str | Path, *, notebook: str | None = None) -> dict[str, Parameter]:
    """The declared parameters of the notebook file ``path``."""
    name = notebook or Path(path).stem
    return parse_parameters(parameters_cell(read_notebook(path), notebook=name).source, notebook=name)


def describe(params: Mapping[str, Parameter]) -> str:
    """The declared parameters in words, ``"K (int), seed (int)"`` (for error messages)."""
    return ", ".join(f"{p.name} ({p.annotation})" for p in params.values())
