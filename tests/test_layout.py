"""The package's shape: no import cycle, no private name imported across modules, small files
and functions, and the combine of Eq. 19/21 and the ``rule`` branches each in one module."""

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "ruleeraser"
MAX_FILE_LINES, MAX_FUNCTION_LINES = 500, 80


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, child.end_lineno + 1))
    return lines


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every package import in ``path`` (in functions too), without
    those under ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("ruleeraser")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            if not base.startswith("ruleeraser"):
                continue
            names = [a.name for a in node.names]
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
            found += [(m, []) for m in submodules]
            rest = [n for n in names if f"{base}.{n}" not in modules]
            if rest:
                found.append((base, rest))
    return found


def test_no_import_cycle():
    modules = _modules()
    graph = {
        name: {m for m, _ in _imports(name, path, modules) if m in modules and m != name}
        for name, path in modules.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_private_name_imported_from_another_module():
    modules = _modules()
    bad = [
        f"{name} imports {n} from {module}"
        for name, path in modules.items()
        for module, names in _imports(name, path, modules)
        for n in names
        if n.startswith("_") and not n.startswith("__") and module != name
    ]
    bad += [
        f"{name} imports the private module {module}"
        for name, path in modules.items()
        for module, _ in _imports(name, path, modules)
        if any(p.startswith("_") and not p.startswith("__") for p in module.split(".")[1:])
        and module.rpartition(".")[0] != name.rpartition(".")[0]
    ]
    assert not bad, "\n".join(bad)


def test_files_and_functions_are_small():
    too_long = []
    for name, path in _modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES:
            too_long.append(f"{path.relative_to(SRC)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert not too_long, "\n".join(too_long)


def test_eq19_is_written_once_and_the_rule_branches_live_in_one_module():
    texts = {name: path.read_text() for name, path in _modules().items()}
    defining = [n for n, t in texts.items() if re.search(r"^def remove_log\(", t, re.M)]
    assert defining == ["ruleeraser.remove"]
    combining = [n for n, t in texts.items() if re.search(r"-=\s*strength\s*\*", t)]
    assert combining == ["ruleeraser.remove"]
    branching = [
        n for n, t in texts.items() if re.search(r"rule\s*==\s*[\"'](group|sample)[\"']", t)
    ]
    assert branching == ["ruleeraser.patch"]
