"""Writes `python/syncline/_native/syncline_ffi.pyi`, the type stub of the module uniffi
generates, so that `mypy --strict` sees it as it behaves at run time.

The generated module declares each variant of an enum with fields (`Value.STR`,
`SyncStatus.SYNCED`) as a class nested in the enum's class, and only afterwards rebinds it
to a subclass of the enum; a type checker sees the first class, unrelated to the enum, so
`doc.put("/t", Value.TEXT("hi"))` would not type-check. The stub declares every public
name with its signature (taken from the generated code's own annotations) and each variant
as a subclass of its enum.

    python3 bindings/python/stubgen.py GENERATED.py STUB.pyi

`cargo xtask bindings` and the Python suite run it; the stub is committed (it ships in the
wheel, and `pip install ./bindings/python` builds no stub), and a test checks it is current.
"""

from __future__ import annotations

import ast
import copy
import re
import sys
from typing import Dict, List

HEADER = '''\
# The type stub of the uniffi-generated module: written by bindings/python/stubgen.py, do not
# edit. See that script for why it exists.
from __future__ import annotations

import enum
import typing
'''


def signature(function: ast.FunctionDef | ast.AsyncFunctionDef, indent: str) -> str:
    """The function's declaration with `...` for its body and its defaults."""
    args = function.args
    for arg in args.args + args.kwonlyargs:
        if arg.annotation is None and arg.arg not in ("self", "cls"):
            # Only the flat errors' constructors are unannotated: they take the message.
            arg.annotation = ast.Name("str")
    args.defaults = [ast.Constant(...) for _ in args.defaults]
    args.kw_defaults = [None if d is None else ast.Constant(...) for d in args.kw_defaults]
    if args.vararg is not None and args.vararg.annotation is None:
        args.vararg.annotation = ast.Name("object")
    if args.kwarg is not None and args.kwarg.annotation is None:
        args.kwarg.annotation = ast.Name("object")
    returns = function.returns
    if returns is None:
        returns = ast.Constant(None) if function.name == "__init__" else ast.Name("typing.Any")
    stub = copy.copy(function)
    stub.args = args
    stub.body = [ast.Expr(ast.Constant(...))]
    stub.decorator_list = [d for d in function.decorator_list if _is_simple_decorator(d)]
    stub.returns = returns
    ast.fix_missing_locations(stub)
    return "\n".join(indent + line for line in ast.unparse(stub).splitlines())


def _is_simple_decorator(decorator: ast.expr) -> bool:
    return isinstance(decorator, ast.Name) and decorator.id in ("classmethod", "staticmethod")


def fields(init: ast.FunctionDef) -> List[str]:
    """`name: type` for each parameter of a record's or variant's constructor."""
    return [
        f"{arg.arg}: {ast.unparse(arg.annotation)}"
        for arg in init.args.args[1:] + init.args.kwonlyargs
        if arg.annotation is not None
    ]


def public_methods(body: List[ast.stmt]) -> List[ast.FunctionDef | ast.AsyncFunctionDef]:
    methods = []
    for node in body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if node.name == "__init__" and _refuses_construction(node):
            continue
        if node.name.startswith("_") and node.name != "__init__":
            continue
        methods.append(node)
    return methods


def _refuses_construction(init: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(isinstance(node, ast.Raise) for node in init.body)


def bases(node: ast.ClassDef) -> str:
    names = [ast.unparse(b) for b in node.bases]
    return f"({', '.join(names)})" if names else ""


def class_stub(node: ast.ClassDef, outer: str = "", error: bool = False) -> List[str]:
    indent = "    " if outer else ""
    inner = indent + "    "
    if outer:
        header = f"{indent}class {node.name}({outer}):"
    elif error:
        header = f"class {node.name}(Exception):"
    else:
        header = f"class {node.name}{bases(node)}:"
    lines = [header]
    is_enum = any(ast.unparse(b) == "enum.Enum" for b in node.bases)
    for stmt in node.body:
        if is_enum and isinstance(stmt, ast.Assign):
            lines.append(inner + ast.unparse(stmt))
    init = next(
        (m for m in node.body if isinstance(m, ast.FunctionDef) and m.name == "__init__"),
        None,
    )
    if init is not None and not _refuses_construction(init):
        lines.extend(inner + field for field in fields(init))
    for method in public_methods(node.body):
        lines.append(signature(method, inner))
    for stmt in node.body:
        if isinstance(stmt, ast.ClassDef):
            lines.extend(class_stub(stmt, outer=node.name))
    if len(lines) == 1:
        lines.append(inner + "...")
    return lines


def stub(source: str) -> str:
    tree = ast.parse(source)
    exported: List[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            exported = list(ast.literal_eval(node.value))
    # A flat or structured error is declared twice: as the exception, then as the class whose
    # nested classes are its variants (subclasses of the exception).
    definitions: Dict[str, List[ast.ClassDef]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in exported:
            definitions.setdefault(node.name, []).append(node)
    out = [HEADER]
    for name in exported:
        nodes = definitions[name]
        if len(nodes) == 2:
            out.extend(class_stub(nodes[1], error=True))
        else:
            out.extend(class_stub(nodes[0]))
        out.append("")
    out.append(f"__all__ = {exported!r}")
    text = "\n".join(out) + "\n"
    # One line per declaration: `def f(self) -> int: ...`, `class A(B): ...`.
    return re.sub(r":\n +\.\.\.\n", ": ...\n", text)


def main() -> None:
    generated, target = sys.argv[1], sys.argv[2]
    with open(generated, encoding="utf-8") as source:
        text = stub(source.read())
    with open(target, "w", encoding="utf-8") as out:
        out.write(text)


if __name__ == "__main__":
    main()
