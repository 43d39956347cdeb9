"""Steering ranks candidates by personal − caution × spread (steering.search).

Runs recorded before this ranked by the personal score alone, so they get
caution 0 (and no spread); new runs default to one posterior sd.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("steering", "0002_paired_test"),
    ]

    operations = [
        migrations.AddField(
            model_name="candidate",
            name="image_spread",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="candidate",
            name="spread",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="optimization",
            name="caution",
            field=models.FloatField(default=0.0),
        ),
        migrations.AlterField(
            model_name="optimization",
            name="caution",
            field=models.FloatField(default=1.0),
        ),
        migrations.AddField(
            model_name="optimizationround",
            name="best_spread",
            field=models.FloatField(default=0.0),
        ),
        migrations.AddConstraint(
            model_name="optimization",
            constraint=models.CheckConstraint(
                condition=models.Q(("caution__gte", 0), ("caution__lte", 5.0)),
                name="optimization_caution_range",
            ),
        ),
    ]
