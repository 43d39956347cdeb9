"""Rate-and-next reads each row once (issue 29, application CPU per rating).

``palate_submit_next`` finds the annotator by its token and locks it (``FOR
SHARE``) in one statement, reading there what ``palate_submit`` and
``palate_claim`` read of it again (status, split key), and reads the
participation's status where it locks it. It then calls them with ``p_held``
(a new last argument, default false: every other caller is unchanged), so
that neither locks and reads the annotator again nor the submit the
participation. The submit takes the image's sha256 from its own ``UPDATE``
and the annotator's split key from its own read and gives the rating its
split by ``palate_split_of`` (the rule of ``palate_split``, on the keys):
``palate_split`` no longer reads the two rows again. A new statistics row's
empty time histogram is a constant, not a query. Same locks in the same
order, same rows, same answers.

Text: ``sql/0030/`` (frozen copies of ``annotation/engine/sql/``). The two
functions with a new argument are dropped first (an added argument makes an
overload, and a call with the old arguments would then be ambiguous);
backwards, the new ones are dropped and the previous copies installed.
"""

from importlib import import_module

from django.db import migrations

_0021 = import_module("annotation.migrations.0021_engine_sql_from_files")

_OLD = (
    "palate_submit(bigint, text, bigint, integer, timestamp with time zone,"
    " timestamp with time zone)",
    "palate_claim(bigint, text, bigint, integer, timestamp with time zone,"
    " integer[], boolean)",
)
_NEW = (
    "palate_submit(bigint, text, bigint, integer, timestamp with time zone,"
    " timestamp with time zone, boolean, text)",
    "palate_claim(bigint, text, bigint, integer, timestamp with time zone,"
    " integer[], boolean, boolean)",
    "palate_split_of(text, text)",
)


def _drop(signatures):
    def drop(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for signature in signatures:
                schema_editor.execute(f"DROP FUNCTION IF EXISTS {signature}")

    return drop


def forwards(apps, schema_editor):
    _drop(_OLD)(apps, schema_editor)
    _0021.install_sql_files("0030")(apps, schema_editor)


def backwards(apps, schema_editor):
    _drop(_NEW)(apps, schema_editor)
    _0021.install_sql_files("0021", ["palate_split"])(apps, schema_editor)
    _0021.install_sql_files("0024", ["palate_submit"])(apps, schema_editor)
    _0021.install_sql_files("0028", ["palate_claim"])(apps, schema_editor)
    _0021.install_sql_files("0029", ["palate_submit_next"])(apps, schema_editor)


class Migration(migrations.Migration):
    dependencies = [("annotation", "0029_submit_next")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
