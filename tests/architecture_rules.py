"""The architecture rules, read from the source with ``ast``.

Each rule is a function of the root of a source tree (``src/labvault`` or a copy of it) that returns
its offences as sorted lines ``"path:line: what"``; ``tests/test_architecture.py`` asserts the real
tree has none and plants one offence per rule in a copy to show each rule can fail.

The layer table (``LAYERS``) is the one map of the code: ``docs/dev/application.md`` draws it.
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# Layers, highest first. An import may point to its own layer or a lower one, never higher.
SUPPORT, FACES, WIRING, DOMAINS, ACCESS, KERNEL = "support", "faces", "wiring", "domains", "access", "kernel"
RANK = {SUPPORT: 5, FACES: 4, WIRING: 3, DOMAINS: 2, ACCESS: 1, KERNEL: 0}

# The layer of every folder and single module of src/labvault, as paths under it. A path ending in
# "/" is a package; the longest matching entry wins (audit's hashing sits below its service). Each
# entry is also one node of the package graph in which no cycle may appear.
LAYERS: dict[str, str] = {
    # test support: real services for the tests (a throwaway PostgreSQL); nothing in src imports it
    "testing/": SUPPORT,
    # faces: a person or a system talks to these; they call domains and access
    "cli/": FACES,
    "api/": FACES,
    "mllp/": FACES,
    "bench/": FACES,
    "web/": FACES,
    # wiring: settings -> key provider + engine -> gateway, hooks installed; faces open it
    "runtime.py": WIRING,
    # domains: what the platform does, through the gateway
    "accounts/": DOMAINS,
    "ingest/": DOMAINS,
    "instructions/": DOMAINS,
    "migration/": DOMAINS,
    "retention/": DOMAINS,
    "audit/": DOMAINS,  # verify, export, search (service.py)
    "synth/": DOMAINS,
    "identity/": DOMAINS,
    "lab/": DOMAINS,
    "monitoring/": DOMAINS,
    "breach/": DOMAINS,
    "compliance/": DOMAINS,
    # access: the gateway, the only way to personal data
    "access/": ACCESS,
    # kernel: knows nothing above it
    "crypto/": KERNEL,
    "store/": KERNEL,
    "domain/": KERNEL,
    "interop/": KERNEL,
    "instructions/document.py": KERNEL,  # the instruction document: a format (parse, schema, signature check)
    "instructions/errors.py": KERNEL,  # the document's exceptions: document.py raises them
    "audit/__init__.py": KERNEL,
    "audit/chain.py": KERNEL,
    "audit/merkle.py": KERNEL,
    "audit/pin.py": KERNEL,
    "audit/errors.py": KERNEL,  # audit's exceptions: pin.py raises them
    "errors.py": KERNEL,
    "ids.py": KERNEL,
    "counts.py": KERNEL,
    "config.py": KERNEL,
    "logs.py": KERNEL,
    "__init__.py": KERNEL,
}

# Where key-material primitives may be imported: hmac, hashlib, secrets anywhere in these;
# cryptography only in crypto/.
HASHING_ALLOWED = ("crypto/", "audit/chain.py", "audit/merkle.py", "audit/pin.py")
PRIMITIVES = ("hmac", "hashlib", "secrets", "cryptography")

# What interop/ (pure formats: bytes <-> domain objects) may not import.
INTEROP_FORBIDDEN = (
    "labvault.access",
    "labvault.store",
    "labvault.ingest",
    "labvault.mllp",
    "socket",
    "socketserver",
    "asyncio",
    "sqlalchemy",
)

# Inside the kernel, crypto and store know nothing of each other (nor of anything above).
KERNEL_APART = {"crypto/": ("labvault.store",), "store/": ("labvault.crypto",)}

# Where the unit of work's private members and its connection may be used.
INSIDE_THE_GATEWAY = ("access/", "store/")

# Underscore names that are public API of the standard library or SQLAlchemy rows.
PUBLIC_UNDERSCORE = frozenset({"_asdict", "_fields", "_replace", "_make", "_field_defaults", "_mapping", "_exit"})

# A third party's private member read on purpose, each with its reason: (module, member) -> why.
ALLOWED_PRIVATE: dict[tuple[str, str], str] = {}

# The modules that may import store.schema: the gateway, the store, and the domains' own tables
# (none of them personal: accounts, audit, intake records, retention rules, migration jobs, signers).
SCHEMA_IMPORTERS = (
    "access/",
    "store/",
    "accounts/",
    "audit/",
    "ingest/intake.py",
    "retention/records.py",
    "migration/jobs.py",
    "instructions/signers.py",
    "lab/service.py",
    "lab/reports.py",  # issued reports: ids, statuses, times and digests, no personal value
)


@dataclass(frozen=True, eq=False)
class Module:
    rel: str  # path under the root, "retention/records.py"
    name: str  # dotted name, "labvault.retention.records"
    tree: ast.Module
    nodes: tuple[ast.AST, ...]  # every node, in ast.walk order (walked once: the rules share it)

    @property
    def package(self) -> str:
        return self.name if self.rel.endswith("__init__.py") else self.name.rpartition(".")[0]


@dataclass(frozen=True)
class Import:
    line: int
    target: str  # the dotted name imported: a module, or a module's attribute


def _dotted(rel: str) -> str:
    parts = rel.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["labvault", *parts])


@cache
def _load(rel: str, text: str) -> Module:
    """Parsed once per content: a copy of the tree with one planted line parses one file."""
    tree = ast.parse(text, rel)
    return Module(rel, _dotted(rel), tree, tuple(ast.walk(tree)))


def modules(root: Path) -> list[Module]:
    """Every module of the tree, except the store's Alembic revisions (frozen history)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("store/revisions/"):
            continue
        found.append(_load(rel, path.read_text("utf-8")))
    return found


@cache
def imports(module: Module) -> tuple[Import, ...]:
    """Every import, wherever it sits: module level, in a function, under ``if TYPE_CHECKING:``,
    and ``importlib.import_module("...")`` with a literal name. Relative imports made absolute."""
    return tuple(_imports(module))


def _imports(module: Module) -> Iterator[Import]:
    for node in module.nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.package.split(".")
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                yield Import(node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield Import(node.lineno, node.args[0].value)


@cache
def resolve(root: Path, target: str) -> str | None:
    """The path under root of the labvault module an import reaches (the deepest existing one):
    ``labvault.audit.service`` -> ``audit/service.py``, ``labvault.access.Unit`` -> ``access/__init__.py``."""
    parts = target.split(".")
    if parts[0] != "labvault":
        return None
    for end in range(len(parts), 0, -1):
        sub = "/".join(parts[1:end])
        for rel in (f"{sub}.py", f"{sub}/__init__.py") if sub else ("__init__.py",):
            if (root / rel).is_file():
                return rel
    return None


def entry(rel: str) -> str | None:
    """The layer-table entry a module belongs to (the longest matching path)."""
    matches = [key for key in LAYERS if rel == key or (key.endswith("/") and rel.startswith(key))]
    return max(matches, key=len) if matches else None


def node_name(key: str) -> str:
    return key.removesuffix("/").removesuffix(".py").replace("/", ".") or "labvault"


def _starts(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# -- rule a: the unit of work's private members and its connection stay inside the gateway --------


def _module_bound_names(root: Path, module: Module) -> set[str]:
    """Names that stand for a module in this file (``import os``, ``from labvault.crypto import
    packages``): ``os._exit`` or ``packages._Pull`` are a module's names, not an object's members."""
    names = set()
    for node in module.nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                rel = resolve(root, f"{node.module}.{alias.name}")
                if rel and _dotted(rel) == f"{node.module}.{alias.name}":
                    names.add(alias.asname or alias.name)
    return names


def _defined_here(module: Module) -> set[str]:
    """Members the classes of this module define (``self._x = ...`` in a method, ``def _x`` or
    ``_x = ...`` in a class body): a class may use its own private members on another instance
    (``other._x``). A module-level ``def _x`` is no member; ``Unit._x = ...`` reaches into a class."""
    names = set()
    for cls in (n for n in module.nodes if isinstance(n, ast.ClassDef)):
        for stmt in cls.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(stmt.name)
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        for node in ast.walk(cls):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id in ("self", "cls")
            ):
                names.add(node.attr)
    return names


def _private(attr: str) -> bool:
    return attr.startswith("_") and not (attr.startswith("__") and attr.endswith("__"))


def private_member_use(root: Path) -> list[str]:
    """Outside access/ and store/: no ``x._member`` on an object other than ``self``/``cls`` (unless
    this module defines that member), and no ``.conn`` at all. The receiver is any expression:
    ``u._record``, ``self.unit._gw``, ``rt.gateway._engine``."""
    offences = []
    for module in modules(root):
        if module.rel.startswith(INSIDE_THE_GATEWAY):
            continue
        modules_here = _module_bound_names(root, module)
        own = _defined_here(module)
        for node in module.nodes:
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and (node.args[1].value == "conn" or _private(node.args[1].value))
                and (module.rel, node.args[1].value) not in ALLOWED_PRIVATE
                and not (isinstance(node.args[0], ast.Name) and node.args[0].id in ("self", "cls"))
            ):
                offences.append(f"{module.rel}:{node.lineno}: {ast.unparse(node)}")
            if not isinstance(node, ast.Attribute):
                continue
            receiver = node.value
            if node.attr == "conn":
                pass
            elif (
                not _private(node.attr)
                or node.attr in PUBLIC_UNDERSCORE
                or node.attr in own
                or (module.rel, node.attr) in ALLOWED_PRIVATE
            ) or (isinstance(receiver, ast.Name) and (receiver.id in ("self", "cls") or receiver.id in modules_here)):
                continue
            offences.append(f"{module.rel}:{node.lineno}: {ast.unparse(node)}")
    return sorted(offences)


# -- rule b: imports point down ---------------------------------------------------------------------


def layer_offences(root: Path) -> list[str]:
    """Every module has a layer; every import of a labvault module points to the importer's own
    layer or a lower one (function-level and ``TYPE_CHECKING`` imports count)."""
    offences = []
    for module in modules(root):
        here = entry(module.rel)
        if here is None:
            offences.append(f"{module.rel}:1: has no layer in the table")
            continue
        for imp in imports(module):
            rel = resolve(root, imp.target)
            there = entry(rel) if rel else None
            if there is None:
                continue
            if RANK[LAYERS[there]] > RANK[LAYERS[here]]:
                offences.append(f"{module.rel}:{imp.line}: imports {imp.target} ({LAYERS[here]} -> {LAYERS[there]})")
    return sorted(set(offences))


def interop_impurity(root: Path) -> list[str]:
    """interop/ is pure formats: no gateway, store, ingest, listener, socket or SQLAlchemy."""
    return sorted(
        {
            f"{m.rel}:{imp.line}: imports {imp.target}"
            for m in modules(root)
            if m.rel.startswith("interop/")
            for imp in imports(m)
            if _starts(imp.target, INTEROP_FORBIDDEN)
        }
    )


def kernel_apart(root: Path) -> list[str]:
    """crypto/ knows nothing of tables, store/ nothing of keys."""
    return sorted(
        {
            f"{m.rel}:{imp.line}: imports {imp.target}"
            for m in modules(root)
            for prefix, banned in KERNEL_APART.items()
            if m.rel.startswith(prefix)
            for imp in imports(m)
            if _starts(imp.target, banned)
        }
    )


# -- rule c: no cycle between packages --------------------------------------------------------------


def package_graph(root: Path) -> dict[str, dict[str, str]]:
    """Edges between layer-table entries: importer -> imported -> one place it happens."""
    graph: dict[str, dict[str, str]] = defaultdict(dict)
    for module in modules(root):
        here = entry(module.rel)
        if here is None:
            continue
        for imp in sorted(imports(module), key=lambda i: i.line):
            rel = resolve(root, imp.target)
            there = entry(rel) if rel else None
            if there is not None and there != here:
                graph[node_name(here)].setdefault(node_name(there), f"{module.rel}:{imp.line}")
    return graph


def _components(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    nodes = sorted(set(graph) | {t for targets in graph.values() for t in targets})
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, {})))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(found)


def _shortest_cycle(graph: dict[str, dict[str, str]], start: str, within: set[str]) -> list[str]:
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, {})):
                if child not in within:
                    continue
                if child == start:
                    return paths[node] + [start]
                if child not in paths:
                    paths[child] = paths[node] + [child]
                    following.append(child)
        frontier = following
    return [start]


def import_cycles(root: Path) -> list[str]:
    """No cycle between packages. Each tangle is printed as one shortest cycle through its first
    member, each arrow with one import that makes it, then every member of the tangle."""
    graph = package_graph(root)
    offences = []
    for component in _components(graph):
        cycle = _shortest_cycle(graph, component[0], set(component))
        arrows = ", ".join(f"{a} -> {b} ({graph[a][b]})" for a, b in itertools.pairwise(cycle))
        offences.append(f"cycle {' -> '.join(cycle)}: {arrows}; tangle: {', '.join(component)}")
    return offences


# -- rule d: key-material primitives only in crypto/ (and audit's hashing) --------------------------


def primitive_imports(root: Path) -> list[str]:
    """hmac, hashlib, secrets only in crypto/ and audit's hashing; cryptography only in crypto/."""
    offences = []
    for module in modules(root):
        for imp in imports(module):
            top = imp.target.split(".")[0]
            if top not in PRIMITIVES:
                continue
            allowed = ("crypto/",) if top == "cryptography" else HASHING_ALLOWED
            if not module.rel.startswith(allowed):
                offences.append(f"{module.rel}:{imp.line}: imports {imp.target}")
    return sorted(set(offences))


# -- rule e: tables and SQL --------------------------------------------------------------------------


def _personal_tables() -> frozenset[str]:
    from labvault.store.schema import PERSONAL_TABLES

    return PERSONAL_TABLES


def personal_table_names(root: Path) -> list[str]:
    """Outside access/ and store/, no module names a personal-data table: ``t.result`` on the schema
    module, ``from labvault.store.schema import result``, or ``metadata.tables["result"]``."""
    personal = _personal_tables()
    offences = []
    for module in modules(root):
        if module.rel.startswith(INSIDE_THE_GATEWAY):
            continue
        schema_names = {"labvault.store.schema"}
        for node in module.nodes:
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if full == "labvault.store.schema":
                        schema_names.add(alias.asname or alias.name)
                    elif node.module == "labvault.store.schema" and alias.name in personal:
                        offences.append(f"{module.rel}:{node.lineno}: {full}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "labvault.store.schema" and alias.asname:
                        schema_names.add(alias.asname)
        for node in module.nodes:
            if (
                isinstance(node, ast.Attribute) and node.attr in personal and ast.unparse(node.value) in schema_names
            ) or (
                isinstance(node, ast.Subscript)
                and isinstance(node.slice, ast.Constant)
                and node.slice.value in personal
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "tables"
            ):
                offences.append(f"{module.rel}:{node.lineno}: {ast.unparse(node)}")
    return sorted(set(offences))


def schema_importers(root: Path) -> list[str]:
    """Only the gateway, the store and the domains' own (non-personal) tables import store.schema."""
    offences = []
    for module in modules(root):
        if module.rel.startswith(SCHEMA_IMPORTERS):
            continue
        for imp in imports(module):
            if resolve(root, imp.target) == "store/schema.py":
                offences.append(f"{module.rel}:{imp.line}: imports {imp.target}")
    return sorted(set(offences))


def personal_attributes_in(root: Path, folders: tuple[str, ...]) -> list[str]:
    """No attribute named like a personal-data table at all in these folders (accounts, audit)."""
    personal = _personal_tables()
    return sorted(
        {
            f"{m.rel}:{node.lineno}: {ast.unparse(node)}"
            for m in modules(root)
            if m.rel.startswith(folders)
            for node in m.nodes
            if isinstance(node, ast.Attribute) and node.attr in personal
        }
    )


def raw_sql(root: Path) -> list[str]:
    """No ``text(...)`` SQL outside store/."""
    return sorted(
        {
            f"{m.rel}:{node.lineno}: {ast.unparse(node.func)}(...)"
            for m in modules(root)
            if not m.rel.startswith("store/")
            for node in m.nodes
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "text"
        }
    )


def summary(offences: list[str]) -> str:
    """Offences counted per file, then listed: the assertion message."""
    per_file: dict[str, int] = defaultdict(int)
    for line in offences:
        per_file[line.split(":", 1)[0]] += 1
    counts = ", ".join(f"{path} {n}" for path, n in sorted(per_file.items()))
    return f"{len(offences)} offences ({counts}):\n" + "\n".join(offences)
