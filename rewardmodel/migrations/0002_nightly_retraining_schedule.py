"""Creates the nightly retraining beat entry (02:30 UTC). Admins change its time in
Django admin → Periodic tasks; django-celery-beat's DatabaseScheduler picks the
change up without a deploy."""

from django.db import migrations

NAME = "rewardmodel: nightly retraining"


def create_schedule(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    if PeriodicTask.objects.filter(name=NAME).exists():
        return
    crontab, _ = CrontabSchedule.objects.get_or_create(
        minute="30", hour="2", day_of_week="*", day_of_month="*", month_of_year="*",
        timezone="UTC",
    )
    PeriodicTask.objects.create(
        name=NAME,
        task="rewardmodel.nightly_retrain",
        crontab=crontab,
        description="Retrain the personalized reward model when new ratings arrived.",
    )


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("rewardmodel", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
