"""A claim's cost no longer grows with the study nor with the annotator's
history (issue 29), and the adaptive claim reads a bounded number of rows
(issue 27).

* ``StudyTally`` (images per study) and ``RatingTally`` (ratings per annotator
  and study, valid or not) are kept by the database: statement-level triggers
  on PostgreSQL (``palate_tally_images``, ``palate_tally_ratings``), row-level
  triggers on SQLite, so every writer (the engine, imports, bulk SQL) keeps
  them exact in its own transaction. Backfilled here, after the triggers exist
  (on PostgreSQL the trigger's lock holds writers off until this commits).
* ``palate_claim`` reads them instead of counting the study's images on every
  page and API claim (a sequential scan of 100,000 images: 8,273 buffers,
  43 ms of PostgreSQL CPU per rating) and the annotator's ratings.
* Adaptive: the level L is found among the first 32 images of the open queue
  and the ranking is walked through its first 200 ranks only, each one
  primary-key lookup.
* The exact search before "nothing left" looks again with ``SKIP LOCKED`` (up
  to 2 s) instead of waiting on a row lock: a claim may hold locks on images it
  skipped (rows that failed the recheck stay locked), and two waiting claims
  deadlocked.

Text: ``sql/0025/`` (frozen copies of ``annotation/engine/sql/``); backwards,
0024's ``palate_claim`` and no trigger.
"""

from importlib import import_module

import django.db.models.deletion
from django.db import migrations, models

_0021 = import_module("annotation.migrations.0021_engine_sql_from_files")

_PG_TRIGGERS = """
CREATE TRIGGER palate_tally_images_ins AFTER INSERT ON annotation_image
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION palate_tally_images();
CREATE TRIGGER palate_tally_images_del AFTER DELETE ON annotation_image
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION palate_tally_images();
CREATE TRIGGER palate_tally_ratings_ins AFTER INSERT ON annotation_rating
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION palate_tally_ratings();
CREATE TRIGGER palate_tally_ratings_del AFTER DELETE ON annotation_rating
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION palate_tally_ratings();
"""

_PG_DROP = """
DROP TRIGGER IF EXISTS palate_tally_images_ins ON annotation_image;
DROP TRIGGER IF EXISTS palate_tally_images_del ON annotation_image;
DROP TRIGGER IF EXISTS palate_tally_ratings_ins ON annotation_rating;
DROP TRIGGER IF EXISTS palate_tally_ratings_del ON annotation_rating;
DROP FUNCTION IF EXISTS palate_tally_images();
DROP FUNCTION IF EXISTS palate_tally_ratings();
"""

# SQLite: row-level triggers, the same counts (the SQL path never runs there,
# but the Python path reads the tallies on both databases).
_SQLITE_TRIGGERS = [
    """CREATE TRIGGER palate_tally_images_ins AFTER INSERT ON annotation_image
    BEGIN
        INSERT INTO annotation_studytally (study_id, images)
        VALUES (NEW.study_id, 1)
        ON CONFLICT (study_id) DO UPDATE SET images = images + 1;
    END""",
    """CREATE TRIGGER palate_tally_images_del AFTER DELETE ON annotation_image
    BEGIN
        UPDATE annotation_studytally SET images = images - 1
        WHERE study_id = OLD.study_id;
    END""",
    """CREATE TRIGGER palate_tally_ratings_ins AFTER INSERT ON annotation_rating
    BEGIN
        INSERT INTO annotation_ratingtally (annotator_id, study_id, rated)
        VALUES (NEW.annotator_id, NEW.study_id, 1)
        ON CONFLICT (annotator_id, study_id) DO UPDATE SET rated = rated + 1;
    END""",
    """CREATE TRIGGER palate_tally_ratings_del AFTER DELETE ON annotation_rating
    BEGIN
        UPDATE annotation_ratingtally SET rated = rated - 1
        WHERE annotator_id = OLD.annotator_id AND study_id = OLD.study_id;
    END""",
]

_BACKFILL = [
    "DELETE FROM annotation_studytally",
    "DELETE FROM annotation_ratingtally",
    "INSERT INTO annotation_studytally (study_id, images) "
    "SELECT study_id, count(*) FROM annotation_image GROUP BY study_id",
    "INSERT INTO annotation_ratingtally (annotator_id, study_id, rated) "
    "SELECT annotator_id, study_id, count(*) FROM annotation_rating "
    "GROUP BY annotator_id, study_id",
]


def _triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        _0021.install_sql_files(
            "0025", ["palate_tally_images", "palate_tally_ratings"]
        )(apps, schema_editor)
        schema_editor.execute(_PG_TRIGGERS, params=None)
    elif vendor == "sqlite":
        for sql in _SQLITE_TRIGGERS:
            schema_editor.execute(sql, params=None)
    for sql in _BACKFILL:
        schema_editor.execute(sql, params=None)


def _drop_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(_PG_DROP, params=None)
    elif vendor == "sqlite":
        for name in ("images_ins", "images_del", "ratings_ins", "ratings_del"):
            schema_editor.execute(f"DROP TRIGGER IF EXISTS palate_tally_{name}")


class Migration(migrations.Migration):
    dependencies = [("annotation", "0024_dealing_policy")]

    operations = [
        migrations.CreateModel(
            name="StudyTally",
            fields=[
                (
                    "study",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="annotation.study",
                    ),
                ),
                ("images", models.IntegerField(default=0)),
            ],
        ),
        migrations.CreateModel(
            name="RatingTally",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True,
                        primary_key=True,
                        serialize=False,
                        verbose_name="ID",
                    ),
                ),
                ("rated", models.IntegerField(default=0)),
                (
                    "annotator",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="annotation.annotator",
                    ),
                ),
                (
                    "study",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="annotation.study",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("annotator", "study"), name="ratingtally_unique"
                    )
                ],
            },
        ),
        migrations.RunPython(_triggers, _drop_triggers, elidable=False),
        migrations.RunPython(
            _0021.install_sql_files("0025", ["palate_claim"]),
            _0021.install_sql_files("0024", ["palate_claim"]),
            elidable=False,
        ),
    ]
