"""The engine's PL/pgSQL functions installed from files, one per function.

Until now each function's current text existed only as a chain of migrations
(0007, 0011, 0012, 0014-0017, 0019, some of them ``str.replace`` on an older
text). This migration installs every function from a frozen copy of its
``pg_get_functiondef`` text (``annotation/migrations/sql/0021/<function>.sql``),
identical to what 0020 left in the database, so it changes nothing in a
migrated database; from here on the text to read and edit is the live file
``annotation/engine/sql/<function>.sql``.

Changing a function: edit the live file, copy the changed files to
``annotation/migrations/sql/<new number>/`` and add a migration that installs
them with ``install_sql_files`` (never edit a frozen copy: a database migrated
earlier would not see the change). ``tests/annotation/test_engine_sql_files.py``
fails while the migrated database and the live files differ.
"""

from pathlib import Path

from django.db import migrations

FROZEN = Path(__file__).resolve().parent / "sql"


def install_sql_files(folder: str):
    """A RunPython forward step that runs every ``.sql`` file of
    ``sql/<folder>/`` in name order (PostgreSQL only; SQLite has no functions)."""

    def install(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for path in sorted((FROZEN / folder).glob("*.sql")):
            schema_editor.execute(path.read_text(encoding="utf-8"), params=None)

    return install


class Migration(migrations.Migration):
    dependencies = [("annotation", "0020_erased_identifier_digests")]

    operations = [
        # Backwards: the functions stay as 0020 left them, which is this text.
        migrations.RunPython(
            install_sql_files("0021"), migrations.RunPython.noop, elidable=False
        ),
    ]
