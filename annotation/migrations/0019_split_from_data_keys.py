"""Splits from keys the data carries, not database ids (issue 26).

A rating's split is now a hash of the image's sha256 and the annotator's key
(``annotation.splits.annotator_key``), with no study salt: the same ratings get
the same splits in any database and after any re-import. ``palate_split`` keeps
its signature (the submit calls it with ids) and reads the two keys by primary
key. Ratings written by the assignment engine (they have an assignment) are
re-split with the new function, so that old and new ratings of one image agree;
imported ratings keep what they were given (a published split, or the old hash:
re-import into a fresh study to get the keyed one).
"""

from django.db import migrations

SPLIT = r"""
CREATE OR REPLACE FUNCTION palate_split_key_unit(p_kind text, p_key text)
RETURNS float8 LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    -- annotation.splits._unit: the first 8 bytes of sha256, big-endian, / 2**64.
    v bigint := ('x' || substr(encode(sha256(convert_to(
        'palate-split:' || p_kind || ':' || p_key, 'UTF8')),
        'hex'), 1, 16))::bit(64)::bigint;
BEGIN
    RETURN (CASE WHEN v < 0 THEN v::numeric + 18446744073709551616 ELSE v::numeric
            END)::float8 / 18446744073709551616::float8;
END
$$;

CREATE OR REPLACE FUNCTION palate_split(p_study bigint, p_image bigint, p_annotator bigint)
RETURNS text LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    v_key text;
    u float8;
BEGIN
    -- annotation.splits.split_assign on (Image.sha256, Annotator.split_key);
    -- p_study is unused (kept for the callers' signature).
    SELECT CASE WHEN a.external_id <> '' THEN a.source || ':' || a.external_id
                ELSE a.public_id END
      INTO v_key FROM annotation_annotator a WHERE a.id = p_annotator;
    u := palate_split_key_unit('annotator', v_key);
    IF u < 0.05::float8 THEN RETURN 'val_unseen'; END IF;
    IF u < 0.05::float8 + 0.10::float8 THEN RETURN 'test_unseen'; END IF;
    SELECT i.sha256 INTO v_key FROM annotation_image i WHERE i.id = p_image;
    u := palate_split_key_unit('image', v_key);
    IF u < 0.11::float8 THEN RETURN 'val_seen'; END IF;
    IF u < 0.11::float8 + 0.17::float8 THEN RETURN 'test_seen'; END IF;
    RETURN 'train';
END
$$;
"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(SPLIT, params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        from importlib import import_module

        old = import_module("annotation.migrations.0007_engine_sql").SPLIT
        schema_editor.execute(
            "CREATE OR REPLACE FUNCTION palate_split("
            + old.split("CREATE OR REPLACE FUNCTION palate_split(")[1],
            params=None,
        )
        schema_editor.execute(
            "DROP FUNCTION IF EXISTS palate_split_key_unit(text, text)", params=None
        )


def resplit_engine_ratings(apps, schema_editor):
    from annotation.splits import annotator_key, split_assign

    Rating = apps.get_model("annotation", "Rating")
    qs = Rating.objects.filter(assignment__isnull=False).values_list(
        "pk",
        "split",
        "image__sha256",
        "annotator__source",
        "annotator__external_id",
        "annotator__public_id",
    )
    batch = []
    for pk, old, sha, source, external_id, public_id in qs.iterator(chunk_size=5000):
        key = annotator_key(
            source=source, external_id=external_id, public_id=public_id
        )
        new = split_assign(image_key=sha, annotator_key=key)
        if new != old:
            batch.append(Rating(pk=pk, split=new))
        if len(batch) >= 5000:
            Rating.objects.bulk_update(batch, ["split"])
            batch = []
    if batch:
        Rating.objects.bulk_update(batch, ["split"])


class Migration(migrations.Migration):
    dependencies = [("annotation", "0018_export_withdrawn")]

    operations = [
        migrations.RunPython(install, uninstall),
        migrations.RunPython(resplit_engine_ratings, migrations.RunPython.noop),
    ]
