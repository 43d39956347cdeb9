"""``palate_claim`` answers its one new lease from what it just wrote (issue 29).

The common claim (no live lease, one asked for) ended with a query joining the
lease ids to the assignment and image tables, whose generic plan (PL/pgSQL
caches one) could hash-join over every assignment, and an ``UPDATE`` of
``shown_at`` that its own ``INSERT`` had already set. The function now takes the
image's file and size from the ``UPDATE ... RETURNING`` of its slot and the
lease's times from the values it inserted, and skips the look-up of the images
of leases it does not hold. Same rows, same answer, fewer statements.

Text: ``sql/0028/palate_claim.sql`` (frozen copy of
``annotation/engine/sql/palate_claim.sql``); backwards, 0025's.
"""

from importlib import import_module

from django.db import migrations

_0021 = import_module("annotation.migrations.0021_engine_sql_from_files")


class Migration(migrations.Migration):
    dependencies = [("annotation", "0027_rating_tally_valid")]

    operations = [
        migrations.RunPython(
            _0021.install_sql_files("0028", ["palate_claim"]),
            _0021.install_sql_files("0025", ["palate_claim"]),
            elidable=False,
        ),
    ]
