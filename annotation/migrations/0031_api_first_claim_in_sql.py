"""A participant's first claim through the API in the one statement (issue 29).

``palate_claim`` with ``p_page`` (what the rating page and the API's claim
ask for) answered ``slow`` for a participant not started yet, because the
rating page sends them to the instructions first. The API has no such page:
its Python path starts them and deals. So with a token (the API) the function
now starts them itself (``started_at``), as its non-page path already did;
the rating page (no token) is unchanged. Same signature: the text replaces
the function in place.

Text: ``sql/0031/`` (frozen copy of ``annotation/engine/sql/palate_claim.sql``);
backwards, 0030's copy.
"""

from importlib import import_module

from django.db import migrations

_0021 = import_module("annotation.migrations.0021_engine_sql_from_files")


class Migration(migrations.Migration):
    dependencies = [("annotation", "0030_submit_next_reads_once")]

    operations = [
        migrations.RunPython(
            _0021.install_sql_files("0031"),
            _0021.install_sql_files("0030", ["palate_claim"]),
            elidable=False,
        )
    ]
