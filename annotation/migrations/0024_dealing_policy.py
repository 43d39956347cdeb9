"""Dealing policies (issue 27): ``Study.dealing_policy`` / ``dealing_warmup`` /
``dealing_band``, how each assignment was dealt (``dealt_by``, ``dealt_rank``,
``dealt_information``), the precomputed rankings (``DealingRank``,
``DealingState``), and ``palate_claim`` dealing adaptively
(``annotation/engine/sql/palate_claim.sql``; frozen copies in ``sql/0024/``).
"""

from importlib import import_module

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

_0021 = import_module("annotation.migrations.0021_engine_sql_from_files")


def _previous_functions(apps, schema_editor):
    """Backwards: palate_submit as 0022 left it (its result has one column
    less: dropped first), palate_claim as 0023 did."""
    _drop_submit(apps, schema_editor)
    _0021.install_sql_files("0022")(apps, schema_editor)
    _0021.install_sql_files("0023")(apps, schema_editor)


def _drop_submit(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "DROP FUNCTION IF EXISTS palate_submit(bigint, text, bigint, integer, "
            "timestamp with time zone, timestamp with time zone)",
            params=None,
        )


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0023_claim_bounded_no_false_empty"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="DealingRank",
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
                ("rank", models.PositiveIntegerField()),
                ("information", models.FloatField()),
            ],
        ),
        migrations.CreateModel(
            name="DealingState",
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
                ("version_id", models.IntegerField(blank=True, null=True)),
                ("how", models.CharField(blank=True, max_length=40)),
                ("uncertainty", models.FloatField(blank=True, null=True)),
                ("ranked", models.PositiveIntegerField(default=0)),
                ("refreshed_at", models.DateTimeField()),
            ],
        ),
        migrations.AddField(
            model_name="assignment",
            name="dealt_by",
            field=models.CharField(
                db_default="fullest-first", default="fullest-first", max_length=16
            ),
        ),
        migrations.AddField(
            model_name="assignment",
            name="dealt_information",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="assignment",
            name="dealt_rank",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="study",
            name="dealing_band",
            field=models.PositiveSmallIntegerField(
                db_default=2,
                default=2,
                help_text="adaptive: how many open slots above the fullest open image an image may have and still be chosen (0: only the fullest level; 0 to 1000).",
                validators=[django.core.validators.MaxValueValidator(1000)],
            ),
        ),
        migrations.AddField(
            model_name="study",
            name="dealing_policy",
            field=models.CharField(
                choices=[("fullest-first", "Fullest first"), ("adaptive", "Adaptive")],
                db_default="fullest-first",
                default="fullest-first",
                help_text="fullest-first: the fullest open image, random among equals. adaptive: past the warm-up, the image that teaches the annotator's own model most, among images near the fullest level (the band).",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="study",
            name="dealing_warmup",
            field=models.PositiveSmallIntegerField(
                db_default=10,
                default=10,
                help_text="adaptive: ratings an annotator gives (dealt fullest-first) before their model chooses (0 to 1000).",
                validators=[django.core.validators.MaxValueValidator(1000)],
            ),
        ),
        migrations.AddConstraint(
            model_name="study",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("dealing_policy__in", ["fullest-first", "adaptive"]),
                    ("dealing_warmup__lte", 1000),
                    ("dealing_band__lte", 1000),
                ),
                name="study_dealing_valid",
            ),
        ),
        migrations.AddField(
            model_name="dealingrank",
            name="annotator",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="annotation.annotator",
            ),
        ),
        migrations.AddField(
            model_name="dealingrank",
            name="image",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="annotation.image",
            ),
        ),
        migrations.AddField(
            model_name="dealingrank",
            name="study",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="annotation.study",
            ),
        ),
        migrations.AddField(
            model_name="dealingstate",
            name="annotator",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="annotation.annotator",
            ),
        ),
        migrations.AddField(
            model_name="dealingstate",
            name="study",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="annotation.study",
            ),
        ),
        migrations.AddConstraint(
            model_name="dealingrank",
            constraint=models.UniqueConstraint(
                fields=("annotator", "study", "rank"), name="dealingrank_walk"
            ),
        ),
        migrations.AddConstraint(
            model_name="dealingrank",
            constraint=models.UniqueConstraint(
                fields=("annotator", "study", "image"), name="dealingrank_unique_image"
            ),
        ),
        migrations.AddConstraint(
            model_name="dealingrank",
            constraint=models.CheckConstraint(
                condition=models.Q(("rank__gte", 1), ("information__gte", 0)),
                name="dealingrank_values",
            ),
        ),
        migrations.AddConstraint(
            model_name="dealingstate",
            constraint=models.UniqueConstraint(
                fields=("study", "annotator"), name="dealingstate_unique"
            ),
        ),
        # palate_submit also returns the study's dealing policy: a new result
        # column, so the old function goes first (either way).
        migrations.RunPython(_drop_submit, _drop_submit, elidable=False),
        migrations.RunPython(
            _0021.install_sql_files("0024"), _previous_functions, elidable=False
        ),
    ]
