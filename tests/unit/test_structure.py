"""The shape of relay/ that ARCHITECTURE.md promises: small modules, short
functions, no import cycles, every supervisord program found by its name."""

import ast
import re
from pathlib import Path

from relaytest import ROOT

RELAY = ROOT / "relay"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the relay package."""
    out = {}
    for path in sorted(RELAY.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def test_no_module_over_400_lines():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long


def test_no_function_over_60_lines():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}")
    assert not long


def imports_at_load(name: str, path: Path, known: set[str]) -> set[str]:
    """The relay modules ``name`` imports when it is loaded (not inside functions)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("relay"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("relay")}
    return {m for m in found if m in known and m != name}


def test_no_import_cycle():
    mods = modules()
    graph = {name: imports_at_load(name, path, set(mods)) for name, path in mods.items()}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            assert visit(name, []) is None


def test_every_program_is_found_by_its_name():
    """supervisord's relay-<x> programs run python3 -m relay.<...> modules whose last
    name part is <x> (or whose package is <x>), and log under their program name."""
    conf = (ROOT / "config/etc/supervisor/supervisord.conf.j2").read_text()
    programs = dict(re.findall(r"\[program:(relay-[a-z]+)\][^\[]*?python3 -m ([\w.]+)", conf))
    assert set(programs) >= {"relay-auth", "relay-signup", "relay-filter", "relay-mxdeliv",
                             "relay-mxsend", "relay-metadata", "relay-expire", "relay-certs"}
    mods = modules()
    for program, module in programs.items():
        assert module.split(".")[-1] == program.removeprefix("relay-"), (program, module)
        # a module, or a package whose __main__ starts it: its files name the log
        files = [mods[module]] if module in mods and mods[module].name != "__init__.py" \
            else list(mods[module].parent.glob("*.py"))
        assert any(f'"{program}"' in f.read_text() for f in files), \
            f"{module} does not log as {program}"


def public_definitions(tree: ast.Module, prefix: str = ""):
    """(qualified name, node) of every public class, function and method of a module:
    names without a leading underscore, at module level or in a public class (functions
    inside functions are not public)."""
    for node in tree.body if isinstance(tree, ast.Module) else tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name.startswith("_"):
                continue
            yield prefix + node.name, node
            if isinstance(node, ast.ClassDef):
                yield from public_definitions(node, f"{prefix}{node.name}.")


def test_every_public_definition_has_a_docstring():
    """GUIDE: public functions have docstrings (shapes, units, errors, the RFC or
    reference-relay source of a rule). This keeps it true."""
    missing = [f"{name}.{qualname} (line {node.lineno})"
               for name, path in modules().items()
               for qualname, node in public_definitions(ast.parse(path.read_text()))
               if not (ast.get_docstring(node) or "").strip()]
    assert not missing, f"{len(missing)} public definitions without a docstring: {missing}"
