"""Each PL/pgSQL function's current text lives in ``annotation/engine/sql/``:
the migrated test database must hold exactly those texts (whitespace aside),
and no function may exist there without its file."""

import re
from pathlib import Path

import pytest
from django.db import connection

import annotation

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

LIVE = Path(annotation.__file__).resolve().parent / "engine" / "sql"

# Functions of the public schema that no extension owns: the project's own.
_OURS = """
SELECT p.proname, pg_get_functiondef(p.oid)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public' AND p.prokind = 'f'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.objid = p.oid AND d.deptype = 'e')
ORDER BY p.proname
"""


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _database_functions() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(_OURS)
        rows = cursor.fetchall()
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), f"overloaded functions: {names}"
    return dict(rows)


def test_every_function_in_the_database_has_its_file_and_matches_it():
    in_db = _database_functions()
    files = {p.stem: p.read_text(encoding="utf-8") for p in LIVE.glob("*.sql")}
    assert in_db, "no function found: is the test database migrated?"
    missing = sorted(set(in_db) - set(files))
    assert not missing, f"functions with no file in {LIVE}: {missing}"
    stale = sorted(set(files) - set(in_db))
    assert not stale, f"files of functions the migrations do not create: {stale}"
    differ = [name for name in in_db if _norm(in_db[name]) != _norm(files[name])]
    assert not differ, (
        f"the migrated database differs from the live files for {differ}: "
        "edit the file, freeze a copy and install it in a new migration "
        "(docs/architecture.md, 'The engine's SQL')"
    )


def test_an_edited_file_is_caught(tmp_path):
    """The comparison sees a one-token change (guards ``_norm``)."""
    text = (LIVE / "palate_claim.sql").read_text(encoding="utf-8")
    in_db = _database_functions()["palate_claim"]
    assert _norm(in_db) == _norm(text)
    assert _norm(in_db) != _norm(text.replace("SKIP LOCKED", "", 1))
