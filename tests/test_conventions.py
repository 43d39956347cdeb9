"""The conventions `docs/architecture.md` states, checked over the product code
(every module outside tests/, benchmarks/, migrations/ and scripts/) by reading
its syntax tree, so a new lock or transaction that breaks one fails here:

* every ``select_for_update(`` says ``no_key=``; ``no_key=False`` carries a
  comment (on its line or the line above) saying why (a key changes, a delete
  follows);
* every public function's outermost ``with transaction.atomic(...)`` says
  ``durable=``; ``durable=False`` carries a comment naming the caller that nests
  it; and no function whose transaction is ``durable=True`` is called inside
  another ``with transaction.atomic(...)`` block of the product code;
* within one function (following calls into product functions), row locks are
  taken in the documented lock order ("Lock order" in the doc, read from there):
  a lock that can wait never comes after a lock later in the order
  (``SKIP LOCKED`` acquisitions never wait, so only they may);
* SQL in ``.sql`` files locks with ``FOR NO KEY UPDATE`` rather than a plain
  ``FOR UPDATE`` (unless a ``--`` comment on the line says why), in the same order.
"""

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {"tests", "benchmarks", "migrations", "scripts", "node_modules"}
LOCK_SQL = re.compile(r"FOR\s+(NO\s+KEY\s+UPDATE|UPDATE|SHARE|KEY\s+SHARE)\b", re.I)


def product_files(suffix: str = ".py") -> list[Path]:
    return sorted(
        p
        for p in ROOT.rglob(f"*{suffix}")
        if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)
        and not SKIP_DIRS & set(p.relative_to(ROOT).parts)
    )


def _parsed():
    for path in product_files():
        source = path.read_text()
        yield path.relative_to(ROOT), source.splitlines(), ast.parse(source)


def _kw(call: ast.Call, name: str) -> ast.keyword | None:
    return next((k for k in call.keywords if k.arg == name), None)


def _commented(lines: list[str], lineno: int) -> bool:
    """A ``#`` comment on the line or on the line above."""
    here = lines[lineno - 1]
    return "#" in here or lines[lineno - 2].lstrip().startswith("#")


def _is_false(kw: ast.keyword) -> bool:
    return isinstance(kw.value, ast.Constant) and kw.value.value is False


# --- no_key -------------------------------------------------------------------


def select_for_update_problems(files) -> list[str]:
    problems = []
    for rel, lines, tree in files:
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "select_for_update"
            ):
                continue
            kw = _kw(node, "no_key")
            where = f"{rel}:{node.lineno}"
            if kw is None:
                problems.append(f"{where}: select_for_update() without no_key=")
            elif _is_false(kw) and not _commented(lines, node.lineno):
                problems.append(f"{where}: no_key=False needs a comment saying why")
    return problems


def test_every_select_for_update_says_no_key():
    assert select_for_update_problems(list(_parsed())) == []


# --- durable ------------------------------------------------------------------


def _atomic_call(item: ast.withitem) -> ast.Call | None:
    call = item.context_expr
    if not isinstance(call, ast.Call):
        return None
    f = call.func
    name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
    return call if name == "atomic" else None


def _outermost_atomics(fn) -> list[ast.Call]:
    """The function's ``with ...atomic(...)`` blocks that no other atomic of the
    same function encloses (nested function definitions are their own)."""
    found = []

    def visit(node, inside: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            here = inside
            if isinstance(child, ast.With):
                calls = [c for c in map(_atomic_call, child.items) if c is not None]
                if calls and not inside:
                    found.extend(calls)
                here = inside or bool(calls)
            visit(child, here)

    visit(fn, False)
    return found


def _functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _called_name(call: ast.Call) -> str | None:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)


def durable_problems(files) -> list[str]:
    problems, durable = _durable_stated(files)
    names = [fn.name for _, _, tree in files for fn in _functions(tree)]
    # A name defined twice (a view and the service it calls) cannot be told
    # apart by name: only names defined once are followed.
    durable = {k: v for k, v in durable.items() if names.count(k) == 1}
    return problems + _durable_nested(files, durable)


def _durable_stated(files) -> tuple[list[str], dict[str, str]]:
    problems, durable = [], {}
    for rel, lines, tree in files:
        for fn in _functions(tree):
            if fn.name.startswith("_"):
                continue  # a helper: its public caller is the entry point
            for call in _outermost_atomics(fn):
                kw = _kw(call, "durable")
                where = f"{rel}:{call.lineno} ({fn.name})"
                if kw is None:
                    problems.append(f"{where}: atomic() without durable=")
                elif _is_false(kw):
                    if not _commented(lines, call.lineno):
                        problems.append(f"{where}: durable=False needs a comment")
                else:
                    durable[fn.name] = where
    return problems, durable


# ModelAdmin methods Django runs inside its own transaction (changeform_view,
# delete_view): what they call is nested.
ADMIN_IN_TRANSACTION = {
    "save_model",
    "save_related",
    "save_formset",
    "delete_model",
    "delete_queryset",
}


def _durable_nested(files, durable: dict[str, str]) -> list[str]:
    """Durable functions reached (through product functions, five levels deep)
    from inside an atomic block: a RuntimeError at run time, or a transaction
    that is not the outermost one after all."""
    calls: dict[str, list[set[str]]] = {}
    blocks = []
    for rel, _, tree in files:
        imported = _imported(tree)
        for fn in _functions(tree):
            calls.setdefault(fn.name, []).append(_calls(fn, imported))
            if rel.name == "admin.py" and fn.name in ADMIN_IN_TRANSACTION:
                blocks.append((f"{rel}:{fn.lineno}", _calls(fn, imported)))
            for node in _body_nodes(fn):
                if isinstance(node, ast.With) and any(map(_atomic_call, node.items)):
                    blocks.append((f"{rel}:{node.lineno}", _calls(node, imported)))
    unique = {name: c[0] for name, c in calls.items() if len(c) == 1}
    problems = []
    for where, names in blocks:
        seen, frontier = set(), set(names)
        for _ in range(5):
            seen |= frontier
            frontier = set().union(*(unique.get(n, set()) for n in frontier)) - seen
        for name in sorted(seen & set(durable)):
            problems.append(
                f"{where}: an atomic block reaches {name}, which is durable "
                f"({durable[name]})"
            )
    return problems


def _calls(root, imported) -> set[str]:
    return {
        name
        for node in _body_nodes(root)
        if isinstance(node, ast.Call) and (name := _product_call(node, imported))
    }


def test_every_entry_point_transaction_says_durable():
    assert durable_problems(list(_parsed())) == []


# --- lock order -----------------------------------------------------------------


def documented_lock_order() -> list[list[str]]:
    """The numbered lists under "## Lock order" in docs/architecture.md, each a
    chain of model names (the first ``code`` span of each item)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Lock order", 1)[1].split("\n## ", 1)[0]
    chains: list[list[str]] = []
    for line in section.splitlines():
        m = re.match(r"(\d+)\. `(\w+)`", line)
        if m:
            if m.group(1) == "1":
                chains.append([])
            chains[-1].append(m.group(2))
    return chains


@dataclass(frozen=True)
class Lock:
    model: str
    skip_locked: bool
    where: str


def _root_name(node) -> str | None:
    while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _model_of(call: ast.Call, fn) -> str | None:
    """``Model.objects....select_for_update()`` or ``qs.select_for_update()``
    with ``qs = Model.objects...`` assigned in the same function."""
    name = _root_name(call.func)
    if name and name[0].isupper():
        return name
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            root = _root_name(node.value)
            if root and root[0].isupper():
                return root
    return None


def _db_table_models(fn) -> list[str]:
    """Models named as ``Model._meta.db_table`` in the function, in order."""
    out = []
    for node in ast.walk(fn):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "db_table"
            and isinstance(node.value, ast.Attribute)
            and isinstance(node.value.value, ast.Name)
        ):
            out.append((node.lineno, node.col_offset, node.value.value.id))
    return [m for *_, m in sorted(out)]


def _body_nodes(root):
    """The nodes under ``root``, without nested functions and lambdas (they run
    elsewhere or later, e.g. after commit)."""
    stack = list(ast.iter_child_nodes(root))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _imported(tree) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _product_call(call: ast.Call, imported: set[str]) -> str | None:
    """The function a call names: ``f(...)`` or ``module.f(...)`` (not a method
    of some object, such as a queryset's ``first()``)."""
    f = call.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
        return f.attr if f.value.id in imported else None
    return None


def _events(root, fn, rel, imported) -> list[object]:
    """Locks and calls of product functions under ``root`` (a function, or one
    of its ``with`` blocks), in source order."""
    events, docstrings = [], set()
    tables = _db_table_models(fn)
    for node in _body_nodes(root):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            docstrings.add(id(node.value))  # prose that names a lock is no lock
        if isinstance(node, ast.Call):
            name = _called_name(node)
            if name == "select_for_update":
                model = _model_of(node, fn)
                skip = _kw(node, "skip_locked")
                if model:
                    lock = Lock(model, skip is not None, f"{rel}:{node.lineno}")
                    events.append((node.lineno, node.col_offset, lock))
            elif called := _product_call(node, imported):
                events.append((node.lineno, node.col_offset, called))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if LOCK_SQL.search(node.value) and tables and id(node) not in docstrings:
                skip = "SKIP LOCKED" in node.value.upper()
                lock = Lock(tables[0], skip, f"{rel}:{node.lineno}")
                events.append((node.lineno, node.col_offset, lock))
    return [e for *_, e in sorted(events, key=lambda e: e[:2])]


def transaction_locks(files) -> dict[str, list[Lock]]:
    """The row locks of each transaction the product code opens (each outermost
    ``with transaction.atomic()`` of a function, named ``function:line``), in
    source order, following calls into product functions (names defined once)
    up to five levels deep: a callee's own atomic block runs inside this
    transaction (a savepoint), so its locks are held together with ours."""
    defs: dict[str, list] = {}
    blocks = []
    for rel, _, tree in files:
        imported = _imported(tree)
        for fn in _functions(tree):
            defs.setdefault(fn.name, []).append(_events(fn, fn, rel, imported))
            for node in _body_nodes(fn):
                if isinstance(node, ast.With) and any(map(_atomic_call, node.items)):
                    blocks.append((f"{fn.name}:{node.lineno}", node, fn, rel, imported))
    unique = {name: ev[0] for name, ev in defs.items() if len(ev) == 1}

    def expand(events, depth: int) -> list[Lock]:
        out = []
        for event in events:
            if isinstance(event, Lock):
                out.append(event)
            elif depth < 5 and event in unique:
                out.extend(expand(unique[event], depth + 1))
        return out

    return {
        name: expand(_events(node, fn, rel, imported), 0)
        for name, node, fn, rel, imported in blocks
    }


def lock_order_problems(locks: dict[str, list[Lock]], chains) -> list[str]:
    rank = {m: (i, r) for i, chain in enumerate(chains) for r, m in enumerate(chain)}
    problems = []
    for name, seq in sorted(locks.items()):
        held: list[Lock] = []
        for lock in seq:
            if lock.model in rank and not lock.skip_locked:
                chain, r = rank[lock.model]
                for h in held:
                    if h.model in rank and rank[h.model][0] == chain:
                        if rank[h.model][1] > r:
                            problems.append(
                                f"{name}: {lock.model} ({lock.where}) after "
                                f"{h.model} ({h.where})"
                            )
            held.append(lock)
    return sorted(set(problems))


def test_the_lock_order_is_documented():
    chains = documented_lock_order()
    assert chains[0][:5] == [
        "Annotator",
        "Participation",
        "Assignment",
        "Rating",
        "Image",
    ]
    assert ["Prompt", "GenerationJob", "GenerationItem"] in chains


def test_row_locks_follow_the_documented_order():
    files = list(_parsed())
    locks = transaction_locks(files)
    # The scan sees the engine's paths (or it checks nothing).
    (exclude,) = (v for k, v in locks.items() if k.startswith("participation_exclude:"))
    assert [lk.model for lk in exclude][:4] == [
        "Annotator",
        "Participation",
        "Assignment",
        "Rating",
    ]
    (submit,) = (v for k, v in locks.items() if k.startswith("rating_submit:"))
    assert [lk.model for lk in submit][:2] == ["Annotator", "Assignment"]
    assert "AnnotatorQuality" in {lk.model for lk in submit}
    assert lock_order_problems(locks, documented_lock_order()) == []


def test_the_lock_order_check_catches_a_reversal():
    chains = [["Annotator", "Participation", "Assignment"]]
    seq = [Lock("Assignment", False, "a:1"), Lock("Annotator", False, "a:2")]
    assert lock_order_problems({"f": seq}, chains) == [
        "f: Annotator (a:2) after Assignment (a:1)"
    ]
    skipped = [Lock("Assignment", False, "a:1"), Lock("Annotator", True, "a:2")]
    assert lock_order_problems({"f": skipped}, chains) == []


# --- SQL files ------------------------------------------------------------------


def sql_problems(text: str, where: str, chains, tables: dict[str, str]) -> list[str]:
    """Plain FOR UPDATE without a reason, and locks out of order, in one SQL
    text (each ``CREATE ... FUNCTION`` body its own sequence)."""
    rank = {m: (i, r) for i, chain in enumerate(chains) for r, m in enumerate(chain)}
    problems = []
    for body in re.split(r"CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION", text, flags=re.I):
        held = []
        statements = re.split(r";", body)
        for raw in statements:
            # What the statement does, without its comments; a reason for a
            # plain FOR UPDATE is a comment on the lock's own line.
            lines = [(line.split("--", 1)[0], line) for line in raw.splitlines()]
            stmt = "\n".join(code for code, _ in lines)
            m = LOCK_SQL.search(stmt)
            if not m:
                continue
            lock_line = next(line for code, line in lines if LOCK_SQL.search(code))
            if re.fullmatch(r"UPDATE", m.group(1), re.I) and "--" not in lock_line:
                problems.append(f"{where}: plain FOR UPDATE: {' '.join(stmt.split())}")
            table = re.search(r"\bFROM\s+\"?(\w+)\"?", stmt, re.I)
            model = tables.get(table.group(1)) if table else None
            if model in rank and "SKIP LOCKED" not in stmt.upper():
                for h in held:
                    same = rank[h][0] == rank[model][0]
                    if same and rank[h][1] > rank[model][1]:
                        problems.append(f"{where}: {model} locked after {h}")
            if model in rank:
                held.append(model)
    return problems


def _tables() -> dict[str, str]:
    from django.apps import apps

    return {m._meta.db_table: m.__name__ for m in apps.get_models()}


def test_sql_files_lock_without_blocking_foreign_keys():
    chains, tables = documented_lock_order(), _tables()
    problems = []
    for path in product_files(".sql"):
        problems += sql_problems(
            path.read_text(), str(path.relative_to(ROOT)), chains, tables
        )
    assert problems == []


def test_the_sql_check_catches_a_plain_for_update():
    chains, tables = documented_lock_order(), _tables()
    text = """CREATE FUNCTION f() AS $$
    SELECT 1 FROM annotation_annotatorquality aq WHERE aq.id = 1 FOR UPDATE;
    SELECT 1 FROM annotation_annotator a WHERE a.id = 1 FOR SHARE;
    $$"""
    problems = sql_problems(text, "x.sql", chains, tables)
    assert len(problems) == 2, problems
    assert "plain FOR UPDATE" in problems[0]
    assert "Annotator locked after AnnotatorQuality" in problems[1]
