"""Imports point one way (websocket -> http -> core) and sans-IO modules stay sans-IO."""

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[2] / "ngxws"
ORDER = {"core": 0, "http": 1, "websocket": 2}
SANS_IO = ["core/conf.py", "websocket/handshake.py", "websocket/wsoh.py", "websocket/frames.py", "http/parser.py"]
IO_MODULES = {"socket", "selectors", "os", "signal"}


def imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, 0
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level


def resolve(path, name, level):
    """The ngxws sub-package an import refers to, or None for outside ngxws."""
    if level == 0:
        parts = name.split(".")
        return parts[1] if parts[0] == "ngxws" and len(parts) > 1 else None
    rel = path.relative_to(PKG).parts[:-1]
    base = list(rel[: len(rel) - (level - 1)]) if level > 1 else list(rel)
    target = base + ([p for p in name.split(".") if p] if name else [])
    return target[0] if target else None


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_one_way(path):
    room = path.relative_to(PKG).parts[0]
    if room not in ORDER:
        return  # __main__.py and modules.py know every room
    for name, level in imports(path):
        target = resolve(path, name, level)
        if target in ORDER:
            assert ORDER[target] <= ORDER[room], "%s imports %s (%s)" % (path.name, target, name)


@pytest.mark.parametrize("rel", SANS_IO)
def test_sans_io(rel):
    path = PKG / rel
    if not path.exists():
        pytest.fail("%s is missing" % rel)
    for name, level in imports(path):
        if level == 0:
            assert name.split(".")[0] not in IO_MODULES, "%s imports %s" % (rel, name)
