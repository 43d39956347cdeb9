"""palate_submit deals the attention check dealt to this annotator the fewest times.

Until now it took a check not yet dealt to the annotator and, once every check
had been dealt, any check at random, so one check could come back twice or
three times before another came back at all (issue 23). Now, as
``quality._pick_check``: the checks with the fewest items of this annotator,
random among them. Only the choice of ``v_check`` changes; the rest of
palate_submit is 0016's text (0014's with the excluded participation refused).
"""

from importlib import import_module

from django.db import migrations, models

_0016 = import_module("annotation.migrations.0016_participation_exclusion")

_PICK = """        SELECT f.id INTO v_check FROM (
            SELECT ch.id FROM annotation_attentioncheck ch
            WHERE ch.study_id = v.study_id AND ch.is_active
              AND ch.id NOT IN (SELECT si.check_item_id FROM annotation_streamitem si
                                WHERE si.annotator_id = v_annotator
                                  AND si.kind = 'attention')
            LIMIT 50) f
        ORDER BY random() LIMIT 1;
        IF v_check IS NULL THEN
            SELECT f.id INTO v_check FROM (
                SELECT ch.id FROM annotation_attentioncheck ch
                WHERE ch.study_id = v.study_id AND ch.is_active LIMIT 50) f
            ORDER BY random() LIMIT 1;
        END IF;
"""
_LEAST_DEALT = """        SELECT ch.id INTO v_check FROM annotation_attentioncheck ch
        WHERE ch.study_id = v.study_id AND ch.is_active
        ORDER BY (SELECT count(*) FROM annotation_streamitem si
                  WHERE si.check_item_id = ch.id
                    AND si.annotator_id = v_annotator), random()
        LIMIT 1;
"""


def _submit() -> str:
    text = _0016.submit_sql()
    if text.count(_PICK) != 1:
        raise RuntimeError("palate_submit of 0016 changed: update this migration")
    return text.replace(_PICK, _LEAST_DEALT)


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_submit(), params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_0016.submit_sql(), params=None)


class Migration(migrations.Migration):
    dependencies = [("annotation", "0016_participation_exclusion")]

    operations = [
        migrations.RunPython(install, uninstall, elidable=False),
        # The check's note is no longer shown with it (it would mark the check).
        migrations.AlterField(
            model_name="attentioncheck",
            name="instruction",
            field=models.CharField(
                blank=True,
                help_text=(
                    "A note for staff (e.g. the answer the image asks for). Never "
                    "shown to annotators: the request must be in the image itself."
                ),
                max_length=300,
            ),
        ),
    ]
