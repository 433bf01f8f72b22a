"""Imports point one way (websocket -> http -> core), no package has an import cycle, and
sans-IO modules stay sans-IO."""

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[2] / "ngxws"
ORDER = {"core": 0, "http": 1, "websocket": 2}
SANS_IO = ["core/conf.py", "core/channel.py", "core/resp.py", "websocket/handshake.py", "websocket/wsoh.py", "websocket/frames.py", "http/parser.py"]
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
    package = path.relative_to(PKG).parts[0]
    if package not in ORDER:
        return  # __main__.py and modules.py know every package
    for name, level in imports(path):
        target = resolve(path, name, level)
        if target in ORDER:
            assert ORDER[target] <= ORDER[package], "%s imports %s (%s)" % (path.name, target, name)


# -- import cycles ---------------------------------------------------------------------------------

def module_name(root, path):
    """The dotted name of the module in `path`, a file of the package directory `root`."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(root):
    """{module: modules of the package it imports} for every module under the directory `root`.

    Read with ast, so that imports inside functions count too (they run, only later).
    `from P import N` is an import of the module P.N when there is one, else of P.
    """
    files = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module
                names = [source + "." + a.name if source + "." + a.name in files else source
                         for a in node.names]
            else:
                continue
            for target in names:
                # `import a.b.c` of a module outside the tree is no edge; of ours, the longest known name
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def find_cycles(graph):
    """One cycle [a, b, ..., a] for each group of modules that import each other (Tarjan's SCCs)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for group in groups:
        # the shortest way from the group's first module back to itself, inside the group
        start = min(group)
        paths = {start: [start]}
        todo = [start]
        cycle = None
        while todo and cycle is None:
            v = todo.pop(0)
            for w in sorted(graph[v] & group):
                if w == start:
                    cycle = paths[v] + [start]
                    break
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    todo.append(w)
        cycles.append(cycle)
    return sorted(cycles)


def cycles_through(root, package):
    """The import cycles of the tree at `root` that go through a module of `package` (its own
    modules, not its sub-packages'), each spelt "a -> b -> a"."""
    def in_package(name):
        return name == package or name.rpartition(".")[0] == package

    return [" -> ".join(c) for c in find_cycles(import_graph(root)) if any(in_package(m) for m in c)]


def assert_no_cycles(root, package):
    cycles = cycles_through(root, package)
    assert not cycles, "import cycle: " + "; ".join(cycles)


PACKAGES = ["ngxws"] + sorted("ngxws." + p.parent.name for p in PKG.glob("*/__init__.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package):
    assert_no_cycles(PKG, package)


def test_a_cycle_is_found_and_named(tmp_path):
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    # inside a function, as a lazy import hides a cycle
    (pkg / "b.py").write_text("import os\n\n\ndef f():\n    from .a import x\n    return x\n")
    (pkg / "c.py").write_text("import cyc.a\nfrom cyc import b\n")
    assert import_graph(pkg) == {"cyc": set(), "cyc.a": {"cyc.b"}, "cyc.b": {"cyc.a"},
                                 "cyc.c": {"cyc.a", "cyc.b"}}
    assert cycles_through(pkg, "cyc") == ["cyc.a -> cyc.b -> cyc.a"]
    with pytest.raises(AssertionError, match=r"import cycle: cyc\.a -> cyc\.b -> cyc\.a"):
        assert_no_cycles(pkg, "cyc")
    # the same modules without the function's import: no cycle
    (pkg / "b.py").write_text("import os\n")
    assert cycles_through(pkg, "cyc") == []
    assert_no_cycles(pkg, "cyc")


def test_a_cycle_across_packages_is_found_in_each(tmp_path):
    pkg = tmp_path / "top"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "mods.py").write_text("from .sub.x import X\n")
    (pkg / "sub" / "x.py").write_text("from ..mods import M\n")
    (pkg / "sub" / "y.py").write_text("from . import x\n")
    want = ["top.mods -> top.sub.x -> top.mods"]
    assert cycles_through(pkg, "top") == want
    assert cycles_through(pkg, "top.sub") == want


@pytest.mark.parametrize("rel", SANS_IO)
def test_sans_io(rel):
    path = PKG / rel
    if not path.exists():
        pytest.fail("%s is missing" % rel)
    for name, level in imports(path):
        if level == 0:
            assert name.split(".")[0] not in IO_MODULES, "%s imports %s" % (rel, name)
