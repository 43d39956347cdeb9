"""``palate_submit_next``: rate and take the next in one statement (issue 29).

``POST /api/v1/assignments/{token}/rating/?next=1`` records the rating and
claims the annotator's next item in the same study. On PostgreSQL that is one
call: this function locks the annotator (``FOR SHARE``) and their participation
in the rating's study (the claim's locks, taken first so that the documented
lock order holds), calls ``palate_submit``, then ``palate_claim`` as the API's
claim calls it, and answers both in one row (the claim's columns prefixed
``next_``; ``next_outcome`` NULL when the claim did not run). It copies neither
body: a change to either function is a change here too.

Text: ``sql/0029/palate_submit_next.sql`` (frozen copy of
``annotation/engine/sql/palate_submit_next.sql``); backwards, dropped.
"""

from importlib import import_module

from django.db import migrations

_0021 = import_module("annotation.migrations.0021_engine_sql_from_files")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "DROP FUNCTION IF EXISTS palate_submit_next("
            "bigint, text, bigint, integer, timestamp with time zone,"
            " timestamp with time zone, integer[])"
        )


class Migration(migrations.Migration):
    dependencies = [("annotation", "0028_claim_answer_from_insert")]

    operations = [
        migrations.RunPython(
            _0021.install_sql_files("0029", ["palate_submit_next"]),
            drop,
            elidable=False,
        ),
    ]
