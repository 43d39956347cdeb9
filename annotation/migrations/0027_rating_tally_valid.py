"""``RatingTally.valid``: the annotator's valid ratings in the study, kept by
the database like ``rated`` (migration 0025), so that the dashboard's
annotators page reads both counts from the tally and no rating (issue 29).

* PostgreSQL: ``palate_tally_ratings`` also counts ``is_valid`` on insert and
  delete, and a new statement-level trigger after UPDATE moves the rows whose
  ``is_valid`` (or annotator, or study) changed. A column list (``UPDATE OF
  is_valid``) is not allowed with transition tables, so the trigger fires on
  every UPDATE statement and the function ignores the rows that did not move.
* SQLite: the row-level insert and delete triggers count ``is_valid`` too, and
  a row-level trigger after ``UPDATE OF is_valid, annotator_id, study_id``.
* Backfilled from the ratings after the triggers exist.

Text: ``sql/0027/`` (frozen copy of ``annotation/engine/sql/``); backwards,
0025's function and triggers.
"""

from importlib import import_module

from django.db import migrations, models

_0021 = import_module("annotation.migrations.0021_engine_sql_from_files")
_0025 = import_module("annotation.migrations.0025_claim_counters_bounded")

_PG_UPDATE = """
CREATE TRIGGER palate_tally_ratings_upd AFTER UPDATE ON annotation_rating
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION palate_tally_ratings();
"""

_SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS palate_tally_ratings_ins",
    "DROP TRIGGER IF EXISTS palate_tally_ratings_del",
    "DROP TRIGGER IF EXISTS palate_tally_ratings_upd",
]

_SQLITE_TRIGGERS = [
    """CREATE TRIGGER palate_tally_ratings_ins AFTER INSERT ON annotation_rating
    BEGIN
        INSERT INTO annotation_ratingtally (annotator_id, study_id, rated, valid)
        VALUES (NEW.annotator_id, NEW.study_id, 1, NEW.is_valid <> 0)
        ON CONFLICT (annotator_id, study_id) DO UPDATE
        SET rated = rated + 1, valid = valid + excluded.valid;
    END""",
    """CREATE TRIGGER palate_tally_ratings_del AFTER DELETE ON annotation_rating
    BEGIN
        UPDATE annotation_ratingtally
        SET rated = rated - 1, valid = valid - (OLD.is_valid <> 0)
        WHERE annotator_id = OLD.annotator_id AND study_id = OLD.study_id;
    END""",
    """CREATE TRIGGER palate_tally_ratings_upd
    AFTER UPDATE OF is_valid, annotator_id, study_id ON annotation_rating
    WHEN OLD.is_valid IS NOT NEW.is_valid OR OLD.annotator_id <> NEW.annotator_id
         OR OLD.study_id <> NEW.study_id
    BEGIN
        UPDATE annotation_ratingtally
        SET rated = rated - 1, valid = valid - (OLD.is_valid <> 0)
        WHERE annotator_id = OLD.annotator_id AND study_id = OLD.study_id;
        INSERT INTO annotation_ratingtally (annotator_id, study_id, rated, valid)
        VALUES (NEW.annotator_id, NEW.study_id, 1, NEW.is_valid <> 0)
        ON CONFLICT (annotator_id, study_id) DO UPDATE
        SET rated = rated + 1, valid = valid + excluded.valid;
    END""",
]

_BACKFILL = [
    "DELETE FROM annotation_ratingtally",
    "INSERT INTO annotation_ratingtally (annotator_id, study_id, rated, valid) "
    "SELECT annotator_id, study_id, count(*), "
    "SUM(CASE WHEN is_valid THEN 1 ELSE 0 END) FROM annotation_rating "
    "GROUP BY annotator_id, study_id",
]


def _triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        _0021.install_sql_files("0027", ["palate_tally_ratings"])(apps, schema_editor)
        schema_editor.execute(_PG_UPDATE, params=None)
    elif vendor == "sqlite":
        for sql in _SQLITE_TRIGGERS:
            schema_editor.execute(sql, params=None)
    for sql in _BACKFILL:
        schema_editor.execute(sql, params=None)


def _back(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(
            "DROP TRIGGER IF EXISTS palate_tally_ratings_upd ON annotation_rating",
            params=None,
        )
        _0021.install_sql_files("0025", ["palate_tally_ratings"])(apps, schema_editor)
    elif vendor == "sqlite":
        _sqlite_drop(apps, schema_editor)


def _sqlite_drop(apps, schema_editor):
    """SQLite rebuilds the tally's table to add the column: its triggers on
    annotation_rating go first (they name the table) and come back after."""
    if schema_editor.connection.vendor == "sqlite":
        for sql in _SQLITE_DROP:
            schema_editor.execute(sql, params=None)


def _sqlite_restore_0025(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for sql in _0025._SQLITE_TRIGGERS:
            if "ON annotation_rating" in sql:
                schema_editor.execute(sql, params=None)


class Migration(migrations.Migration):
    dependencies = [("annotation", "0026_study_language")]

    operations = [
        migrations.RunPython(_sqlite_drop, _sqlite_restore_0025, elidable=False),
        migrations.AddField(
            model_name="ratingtally",
            name="valid",
            field=models.IntegerField(default=0),
        ),
        migrations.RunPython(_triggers, _back, elidable=False),
    ]
