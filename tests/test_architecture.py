"""The import rules of docs/ARCHITECTURE.md, checked by walking the source with `ast`.

Every `import` and `from ... import` statement counts, wherever it stands (module
level, inside a function, under `if TYPE_CHECKING:`): a function-level import is a
circle deferred, not a circle removed. An edge goes to the module that is named;
`from pkg import name` goes to `pkg.name` when that is a module, else to `pkg`.
Rules:
- no import circle among the modules of gateway/, nor among those of tools/;
- gateway/ledger/ (the consensus core) imports no other gateway package but
  gateway.errors, and no I/O library nor the clock (see FORBIDDEN_IN_LEDGER);
- shared/, firmware/ and boards/ (code boards load) import no host code;
- the contract VM (gateway/contracts/ but binding.py) imports only shared/;
- the market's consensus files (market/ledger/) import no off-chain node code;
- no module imports another module's `_private` name;
- no two classes of one name in gateway/; no module named like a stdlib module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = ("gateway", "tools", "tests", "bench")
BOARD_SIDE = ("shared", "firmware", "boards")
CHECKED = ("gateway", "tools", "shared", "firmware", "boards", "bench")
# The ledger is the consensus core: a pure function of (state, block). No network,
# no database, no threads, no clock (a block's time comes in its header).
FORBIDDEN_IN_LEDGER = (
    "asyncio", "paho", "amqtt", "sqlite3", "socket", "threading", "selectors",
    "subprocess", "time", "datetime", "concurrent",
)
LEDGER_MAY_IMPORT = ("gateway.ledger", "gateway.errors")
# (module, private name it may use, why): each one a reviewed exception
PRIVATE_ALLOWED = {
    ("bench.crypto", "shared.p256._TABLE"):
        "the benchmark writes the board's comb table into a bytes literal to time both forms",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources(packages: tuple[str, ...]) -> dict[str, Path]:
    found = {}
    for top in packages:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "fixtures" in path.parts:
                continue
            found[_module_name(path)] = path
    return found


ALL = _sources(CHECKED + ("tests",))


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names = [a.name for a in node.names]
            found.append((base, names, node.lineno))
    return found


def _edges(name: str, path: Path) -> set[str]:
    """The project modules this module imports (submodules resolved)."""
    out = set()
    for base, names, _ in _imports(name, path):
        if not names:
            out.add(base)
            continue
        for n in names:
            out.add(f"{base}.{n}" if f"{base}.{n}" in ALL else base)
    return {m for m in out if m in ALL and m != name}


def _circles(prefix: str) -> list[list[str]]:
    """Strongly connected components (Tarjan) of more than one module under prefix."""
    nodes = [m for m in ALL if m == prefix or m.startswith(prefix + ".")]
    graph = {m: sorted(e for e in _edges(m, ALL[m]) if e in nodes) for m in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return sorted(out)


def _describe(circles: list[list[str]]) -> str:
    return "\n".join(f"circle of {len(c)}: " + ", ".join(c) for c in circles)


def test_no_import_circle_in_gateway() -> None:
    circles = _circles("gateway")
    assert not circles, "import circles in gateway/:\n" + _describe(circles)


def test_no_import_circle_in_tools() -> None:
    circles = _circles("tools")
    assert not circles, "import circles in tools/:\n" + _describe(circles)


def test_ledger_is_pure() -> None:
    bad = []
    for name, path in ALL.items():
        if not (name == "gateway.ledger" or name.startswith("gateway.ledger.")):
            continue
        for base, _, line in _imports(name, path):
            top = base.split(".")[0]
            if top == "gateway" and not base.startswith(LEDGER_MAY_IMPORT):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {base}")
            if top in FORBIDDEN_IN_LEDGER:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {base}")
    assert (ROOT / "gateway" / "ledger").is_dir(), "gateway/ledger/ is missing"
    assert not bad, "gateway/ledger/ must stay pure:\n" + "\n".join(bad)


def test_board_side_imports_no_host_code() -> None:
    bad = []
    for name, path in ALL.items():
        if name.split(".")[0] not in BOARD_SIDE:
            continue
        for base, _, line in _imports(name, path):
            if base.split(".")[0] in HOST:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {base}")
    assert not bad, "shared/, firmware/, boards/ must not import host code:\n" + "\n".join(bad)


def _private_uses(tops: tuple[str, ...]) -> list[str]:
    """`from m import _x`, `import m._x`, and `alias._x` where alias is an imported module."""
    bad = []
    for name, path in ALL.items():
        if name.split(".")[0] not in tops:
            continue
        rel = path.relative_to(ROOT)
        modules = {}  # local alias -> project module it names
        for base, names, line in _imports(name, path):
            if base.split(".")[0] not in CHECKED:
                continue
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    bad.append(f"{rel}:{line} takes {n} from {base}")
            if any(p.startswith("_") and not p.startswith("__") for p in base.split(".")):
                bad.append(f"{rel}:{line} imports private module {base}")
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname and a.name in ALL:
                        modules[a.asname] = a.name
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    if f"{node.module}.{a.name}" in ALL:
                        modules[a.asname or a.name] = f"{node.module}.{a.name}"
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                used = f"{modules[node.value.id]}.{node.attr}"
                if (name, used) not in PRIVATE_ALLOWED:
                    bad.append(f"{rel}:{node.lineno} uses {used}")
    return sorted(bad)


def test_no_private_name_used_across_modules() -> None:
    bad = _private_uses(("gateway", "shared", "firmware", "boards", "bench"))
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_no_private_name_used_across_modules_in_tools() -> None:
    bad = _private_uses(("tools",))
    assert not bad, "private names used across modules in tools/:\n" + "\n".join(bad)


def test_contract_vm_imports_only_shared() -> None:
    """The VM stands alone; its ledger binding (gateway/contracts/binding.py) may
    import the ledger."""
    vm = ("gateway.contracts", "gateway.contracts.runtime", "gateway.contracts.builtin",
          "gateway.contracts.world", "gateway.contracts.errors")
    bad = []
    for name in vm:
        for base, _, line in _imports(name, ALL[name]):
            top = base.split(".")[0]
            if top in ("gateway", "tools") and base not in vm:
                bad.append(f"{ALL[name].relative_to(ROOT)}:{line} imports {base}")
    assert not bad, "the contract VM must import only shared/:\n" + "\n".join(bad)


def test_no_two_classes_share_a_name_in_gateway() -> None:
    where: dict[str, list[str]] = {}
    for name, path in ALL.items():
        if name.split(".")[0] != "gateway":
            continue
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.ClassDef):
                where.setdefault(node.name, []).append(name)
    twice = {c: mods for c, mods in where.items() if len(mods) > 1}
    assert not twice, "classes of one name in several modules: %r" % twice


def test_no_module_shadows_the_standard_library() -> None:
    import sys

    bad = sorted(name for name in ALL
                 if name.split(".")[0] in CHECKED and name.rpartition(".")[2] in sys.stdlib_module_names)
    assert not bad, "modules named like a standard-library module: %r" % bad


def test_market_consensus_files_import_no_off_chain_file() -> None:
    """market/ledger/ runs inside blocks: it may not depend on market/node/."""
    bad = []
    for name, path in ALL.items():
        if not name.startswith("gateway.market.ledger"):
            continue
        for base, _, line in _imports(name, path):
            if base.startswith("gateway.market.node") or base.startswith("gateway.node"):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {base}")
    assert not bad, "market/ledger/ imports off-chain code:\n" + "\n".join(bad)


def test_every_package_is_in_the_distribution() -> None:
    """pyproject.toml lists each folder with an __init__.py, so a built wheel
    (docs/RASPBERRY_PI.md) holds every package, not only an editable install."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for top in ("shared", "gateway", "tools", "firmware", "boards")
             for p in (ROOT / top).rglob("__init__.py")}
    assert found - listed == set()
