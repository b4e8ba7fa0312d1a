"""docs/architecture.md, enforced: every domain module has the same files with the same
roles, its named queries run only in its store, its edges run no SQL, its SQL names
another module's relations only where that module published them, and its public face
says what it exports.

These checks read the source; they import nothing but the modules' `__init__`.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from bossa.db.migrations import MODULES

SRC = Path(__file__).resolve().parents[2] / "src" / "bossa"

#: The five of issue 10, and every module with a schema of its own (access, and those to
#: come): the architecture's shape is for all of them.
DOMAIN_MODULES: tuple[str, ...] = tuple(
    dict.fromkeys(("journal", "provisioning", "ledger", "billing", "customers", *MODULES))
)

#: The architecture's table of roles: files, and folders.
ROLE_FILES = frozenset(
    {
        "__init__.py",
        "models.py",
        "store.py",
        "service.py",
        "lanes.py",
        "settings.py",
        "metrics.py",
        "api.py",
        "cli.py",
        "demo.py",
        "sample.py",
    }
)
ROLE_FOLDERS = frozenset({"adapters", "sql"})
#: The journal is the queue every daemon runs on: its generic worker and the kind ->
#: handler table have roles of their own. Rating's vectorised engine is computation with
#: no database I/O, too big for models.py (docs/architecture.md).
EXTRA_FILES = {
    "journal": frozenset({"worker.py", "handlers.py"}),
    "rating": frozenset({"engine.py"}),
}
SQL_FILES = frozenset({"schema.sql", "queries.sql", "__init__.py"})
MIGRATION_FILE = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")

_IGNORED = frozenset({"__pycache__", "py.typed"})


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name not in _IGNORED)


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(SRC.parent)}:{getattr(node, 'lineno', '?')}"


# -- (a) the files and their roles -----------------------------------------------------


@pytest.mark.parametrize("module", DOMAIN_MODULES)
def test_module_has_only_files_with_a_role(module: str) -> None:
    folder = SRC / module
    allowed_files = ROLE_FILES | EXTRA_FILES.get(module, frozenset())
    odd = []
    for entry in _entries(folder):
        if entry.is_dir():
            if entry.name not in ROLE_FOLDERS:
                odd.append(f"{entry.name}/")
        elif entry.name not in allowed_files:
            odd.append(entry.name)
    assert not odd, (
        f"bossa/{module} has files with no role in docs/architecture.md: {', '.join(odd)} "
        "(fold them into models, store, service, lanes, adapters/, settings, metrics, "
        "api, cli, sql/, demo or sample)"
    )


@pytest.mark.parametrize("module", DOMAIN_MODULES)
def test_sql_folder_holds_schema_queries_and_migrations(module: str) -> None:
    folder = SRC / module / "sql"
    assert folder.is_dir(), f"bossa/{module} has no sql/ folder"
    odd = []
    for entry in _entries(folder):
        if entry.is_dir():
            if entry.name != "migrations":
                odd.append(f"sql/{entry.name}/")
                continue
            odd += [
                f"sql/migrations/{m.name}"
                for m in _entries(entry)
                if m.name != "__init__.py" and not MIGRATION_FILE.match(m.name)
            ]
        elif entry.name not in SQL_FILES:
            odd.append(f"sql/{entry.name}")
    assert not odd, f"bossa/{module}: unexpected in sql/: {', '.join(odd)}"


# -- (b) named queries are loaded only by a store ---------------------------------------


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called == name:
                found.append(node)
    return found


def test_named_queries_are_loaded_only_in_a_store() -> None:
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        for call in _calls(_parse(path), "load_queries"):
            relative = path.relative_to(SRC)
            if relative.name != "store.py" or relative.parts[0] not in DOMAIN_MODULES:
                wrong.append(f"{_where(path, call)} calls load_queries outside a store.py")
                continue
            first = call.args[0] if call.args else None
            own = f"bossa.{relative.parts[0]}"
            if not (isinstance(first, ast.Constant) and first.value == own):
                wrong.append(f"{_where(path, call)} loads queries of another package than {own}")
    assert not wrong, "\n".join(wrong)


# -- (c) thin edges ---------------------------------------------------------------------


def _edges() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.name in {"api.py", "cli.py"})


def _edge_sins(path: Path) -> list[str]:
    sins = []
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.ImportFrom):
            source = node.module or ""
            names = {alias.name for alias in node.names}
            if source == "store" or source.endswith(".store"):
                sins.append(f"{_where(path, node)} imports from {'.' * node.level}{source}")
            if "store" in names:
                sins.append(f"{_where(path, node)} imports store")
            if "QUERIES" in names:
                sins.append(f"{_where(path, node)} imports QUERIES")
        elif isinstance(node, ast.Import):
            sins += [
                f"{_where(path, node)} imports {alias.name}"
                for alias in node.names
                if alias.name == "store" or alias.name.endswith(".store")
            ]
        elif isinstance(node, ast.Name) and node.id == "QUERIES":
            sins.append(f"{_where(path, node)} uses QUERIES")
        elif isinstance(node, ast.Attribute) and node.attr == "QUERIES":
            sins.append(f"{_where(path, node)} uses .QUERIES")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"execute", "executemany"}
        ):
            sins.append(f"{_where(path, node)} runs SQL (.{node.func.attr})")
    return sorted(set(sins))


@pytest.mark.parametrize("path", _edges(), ids=lambda p: str(p.relative_to(SRC)))
def test_edges_run_no_sql(path: Path) -> None:
    sins = _edge_sins(path)
    assert not sins, "an edge parses, calls one service function, renders:\n" + "\n".join(sins)


# -- (d) modules meet through published relations only ----------------------------------

_PUBLISHED = re.compile(r"--\s*published:\s*(?P<names>[^\n]+)", re.IGNORECASE)
_QUALIFIED = re.compile(
    r"(?<![\w.$])(?P<schema>[a-z_][a-z0-9_$]*)\s*\.\s*(?P<name>[a-z_][a-z0-9_$]*)", re.IGNORECASE
)
_CREATE_SCHEMA = re.compile(
    r"\bcreate\s+schema\s+(?:if\s+not\s+exists\s+)?(?P<name>[a-z_][a-z0-9_]*)", re.IGNORECASE
)
_DOLLAR_TAG = re.compile(r"\$(?:[a-z_][a-z0-9_]*)?\$", re.IGNORECASE)


def sql_code(text: str) -> str:
    """`text` with comments and string literals blanked out, keeping the code.

    Dollar-quoted bodies (functions, DO blocks) are code and are kept; quoted
    identifiers lose their quotes, so `"journal"."entries"` reads as journal.entries.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char, pair = text[i], text[i : i + 2]
        if pair == "--":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif pair == "/*":
            start, depth, i = i, 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            out.append(" " + "\n" * text.count("\n", start, i))  # lines keep their numbers
        elif char == "'":
            escapes = i > 0 and text[i - 1] in "eE" and (i < 2 or not text[i - 2].isalnum())
            start, i = i, i + 1
            while i < n:
                if (escapes and text[i] == "\\") or text.startswith("''", i):
                    i += 2
                elif text[i] == "'":
                    i += 1
                    break
                else:
                    i += 1
            out.append("''" + "\n" * text.count("\n", start, i))
        elif char == '"':
            end = text.find('"', i + 1)
            end = n - 1 if end < 0 else end
            out.append(text[i + 1 : end])
            i = end + 1
        elif char == "$" and (tag := _DOLLAR_TAG.match(text, i)) and not _in_word(text, i):
            out.append(" ")
            i = tag.end()
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _in_word(text: str, i: int) -> bool:
    # `$1` parameters and identifiers with a `$` in them are not dollar quotes.
    return i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")


def _sql_files(module: str) -> list[Path]:
    folder = SRC / module / "sql"
    return [folder / name for name in ("schema.sql", "queries.sql") if (folder / name).exists()]


def _schemas(module: str) -> set[str]:
    schema = SRC / module / "sql" / "schema.sql"
    text = sql_code(schema.read_text()) if schema.exists() else ""
    return {m["name"].lower() for m in _CREATE_SCHEMA.finditer(text)} or {module}


def _published(module: str) -> set[str]:
    schema = SRC / module / "sql" / "schema.sql"
    if not schema.exists():
        return set()
    names: set[str] = set()
    for match in _PUBLISHED.finditer(schema.read_text()):
        names |= {n.lower() for n in re.split(r"[\s,]+", match["names"].strip()) if n}
    return names


@pytest.mark.parametrize("module", DOMAIN_MODULES)
def test_sql_names_other_modules_only_through_published_relations(module: str) -> None:
    others = {s: m for m in DOMAIN_MODULES if m != module for s in _schemas(m)}
    published = set().union(*(_published(m) for m in DOMAIN_MODULES if m != module))
    wrong = []
    for path in _sql_files(module):
        code = sql_code(path.read_text())
        for match in _QUALIFIED.finditer(code):
            schema, name = match["schema"].lower(), match["name"].lower()
            if schema in others and f"{schema}.{name}" not in published:
                line = code.count("\n", 0, match.start()) + 1
                wrong.append(
                    f"{path.relative_to(SRC.parent)}:{line} names {schema}.{name}, "
                    f"which {others[schema]}'s schema.sql does not mark "
                    f"`-- published: {schema}.{name}`"
                )
    assert not wrong, "\n".join(wrong)


_CREATED = re.compile(
    r"\bcreate\s+(?:or\s+replace\s+)?(?:materialized\s+)?"
    r"(?:table|view|function|procedure|type|domain|sequence|aggregate)\s+"
    r"(?:if\s+not\s+exists\s+)?(?P<schema>[a-z_][a-z0-9_]*)\.(?P<name>[a-z_][a-z0-9_]*)",
    re.IGNORECASE,
)


@pytest.mark.parametrize("module", DOMAIN_MODULES)
def test_published_marks_name_what_the_schema_creates(module: str) -> None:
    schema = SRC / module / "sql" / "schema.sql"
    code = sql_code(schema.read_text()) if schema.exists() else ""
    created = {f"{m['schema']}.{m['name']}".lower() for m in _CREATED.finditer(code)}
    stale = sorted(_published(module) - created)
    assert not stale, f"bossa/{module}/sql/schema.sql publishes what it does not create: {stale}"


def test_sql_code_keeps_code_and_drops_comments_and_strings() -> None:
    # The parser the check above stands on.
    text = (
        "select j.id from journal.entries j -- journal.hidden\n"
        "/* journal.also /* nested */ hidden */ where lane = 'journal.lane'''\n"
        'and x = E\'it\\\'s journal.quoted\' and "journal"."shown" = $1\n'
        "create function f() returns void language sql as $body$ select journal.inside $body$;"
    )
    found = {f"{m['schema']}.{m['name']}" for m in _QUALIFIED.finditer(sql_code(text))}
    assert found == {"j.id", "journal.entries", "journal.shown", "journal.inside"}


# -- (e) the public face ----------------------------------------------------------------


@pytest.mark.parametrize("module", DOMAIN_MODULES)
def test_public_face_has_an_explicit_all(module: str) -> None:
    path = SRC / module / "__init__.py"
    declared = None
    for node in _parse(path).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            declared = node.value
    assert declared is not None, f"bossa/{module}/__init__.py has no __all__"
    assert isinstance(declared, ast.List | ast.Tuple), (
        f"bossa/{module}/__init__.py: __all__ must be a literal list of names"
    )
    names = [e.value for e in declared.elts if isinstance(e, ast.Constant)]
    assert len(names) == len(declared.elts), f"bossa/{module}: __all__ holds non-strings"
    face = importlib.import_module(f"bossa.{module}")
    missing = [name for name in names if not hasattr(face, name)]
    assert not missing, f"bossa/{module}: __all__ names what it does not define: {missing}"
