"""Exclusion per study: ``Participation.status`` / ``excluded_at``.

Excluding an annotator from a study's page used to set the annotator's global
status and invalidate their ratings in every study. Now a participation can be
excluded on its own (``participation_exclude``); excluding everywhere is a
separate action (``exclude_all`` in the audit log) that also marks every
participation. Participations of annotators excluded before this migration are
marked excluded here, so "nothing valid from an excluded participation" holds.

``palate_claim`` (0012) and ``palate_submit`` (0014's text) now also answer
``slow`` for an excluded participation, and the Python path refuses. Their text
is derived from those migrations with one checked replacement each.
"""

from importlib import import_module

from django.conf import settings
from django.db import migrations, models
from django.db.models.functions import Now

_0011 = import_module("annotation.migrations.0011_submit_quality_sql")
_0012 = import_module("annotation.migrations.0012_claim_page")
_0014 = import_module("annotation.migrations.0014_qualityconfig_bounds_check_lock")

# The claim reads the participation under its lock anyway: read its status too.
_CLAIM_PART = """    SELECT p.id, p.started_at, p.consented_at, p.completed_at INTO v_part
    FROM annotation_participation p
    WHERE p.annotator_id = v_annotator AND p.study_id = p_study
    FOR NO KEY UPDATE;
"""
_CLAIM_PART_EXCLUDED = (
    _CLAIM_PART.replace("p.completed_at INTO", "p.completed_at, p.status INTO")
    + """    IF FOUND AND v_part.status <> 'active' THEN
        -- Excluded from this study: the Python path refuses.
        outcome := 'slow'; RETURN NEXT; RETURN;
    END IF;
"""
)
# The submit holds the annotator FOR SHARE, which an exclusion (FOR NO KEY
# UPDATE on the annotator) waits for: the participation read after it is current.
_SUBMIT_CHECK = """       OR v_status IS DISTINCT FROM 'active' OR v.study_status <> 'open'
"""
_SUBMIT_CHECK_EXCLUDED = (
    _SUBMIT_CHECK
    + """       OR EXISTS (SELECT 1 FROM annotation_participation p
                  WHERE p.annotator_id = v_annotator AND p.study_id = v.study_id
                    AND p.status <> 'active')
"""
)


def _replace_once(text: str, old: str, new: str, what: str) -> str:
    if text.count(old) != 1:
        raise RuntimeError(f"{what} changed: update this migration")
    return text.replace(old, new)


def claim_sql() -> str:
    return _0012.DROP + _replace_once(
        _0012.CLAIM, _CLAIM_PART, _CLAIM_PART_EXCLUDED, "palate_claim of 0012"
    )


def submit_sql() -> str:
    return _replace_once(
        _0014._submit_with_lock(),
        _SUBMIT_CHECK,
        _SUBMIT_CHECK_EXCLUDED,
        "palate_submit of 0014",
    )


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(claim_sql() + submit_sql(), params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            _0012.DROP + _0012.CLAIM + _0014._submit_with_lock(), params=None
        )


def mark_excluded(apps, schema_editor):
    """Annotators excluded before per-study exclusion: excluded everywhere."""
    Participation = apps.get_model("annotation", "Participation")
    Participation.objects.filter(annotator__status="excluded").update(
        status="excluded", excluded_at=Now()
    )


def unmark_excluded(apps, schema_editor):
    Participation = apps.get_model("annotation", "Participation")
    Participation.objects.update(status="active", excluded_at=None)



class Migration(migrations.Migration):

    dependencies = [
        ('annotation', '0015_sql_helpers_cached'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='moderationevent',
            name='moderationevent_action_valid',
        ),
        migrations.AddField(
            model_name='participation',
            name='excluded_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='participation',
            name='status',
            field=models.CharField(choices=[('active', 'Active'), ('excluded', 'Excluded')], db_default='active', default='active', max_length=10),
        ),
        migrations.AlterField(
            model_name='moderationevent',
            name='action',
            field=models.CharField(choices=[('pause', 'Paused'), ('resume', 'Resumed'), ('exclude', 'Excluded from the study'), ('exclude_all', 'Excluded from every study'), ('auto_pause', 'Paused automatically')], max_length=12),
        ),
        migrations.AddConstraint(
            model_name='moderationevent',
            constraint=models.CheckConstraint(condition=models.Q(('action__in', ['pause', 'resume', 'exclude', 'exclude_all', 'auto_pause'])), name='moderationevent_action_valid'),
        ),
        migrations.RunPython(mark_excluded, unmark_excluded),
        migrations.AddConstraint(
            model_name='participation',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('excluded_at__isnull', True), ('status', 'active')), models.Q(('excluded_at__isnull', False), ('status', 'excluded')), _connector='OR'), name='participation_status_valid'),
        ),
        migrations.RunPython(install, uninstall, elidable=False),
    ]
