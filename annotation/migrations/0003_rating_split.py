"""Rating.split: the stored evaluation split (annotation.splits).

Existing ratings get the split their (study, image, annotator) hashes to, exactly
as a new rating would.
"""

import hashlib

from django.db import migrations, models


def _unit(study_id, kind, identity) -> float:
    # The split function of this migration's time (salted per study, by ids);
    # annotation.splits now hashes the data's own keys (migration 0016).
    digest = hashlib.sha256(f"palate-split:{study_id}:{kind}:{identity}".encode())
    return int.from_bytes(digest.digest()[:8], "big") / 2**64


def split_assign(*, study_id, image_id, annotator_id) -> str:
    u = _unit(study_id, "annotator", annotator_id)
    if u < 0.05:
        return "val_unseen"
    if u < 0.05 + 0.10:
        return "test_unseen"
    u = _unit(study_id, "image", image_id)
    return "val_seen" if u < 0.11 else "test_seen" if u < 0.11 + 0.17 else "train"


def assign_splits(apps, schema_editor):
    Rating = apps.get_model("annotation", "Rating")
    batch = []
    for r in Rating.objects.only("pk", "study_id", "image_id", "annotator_id").iterator(
        chunk_size=2000
    ):
        r.split = split_assign(
            study_id=r.study_id, image_id=r.image_id, annotator_id=r.annotator_id
        )
        batch.append(r)
        if len(batch) >= 2000:
            Rating.objects.bulk_update(batch, ["split"])
            batch = []
    if batch:
        Rating.objects.bulk_update(batch, ["split"])


class Migration(migrations.Migration):

    dependencies = [
        ("annotation", "0002_assignment_shown_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="rating",
            name="split",
            field=models.CharField(
                choices=[
                    ("train", "Train"),
                    ("val_seen", "Validation, seen annotators"),
                    ("val_unseen", "Validation, unseen annotators"),
                    ("test_seen", "Test, seen annotators"),
                    ("test_unseen", "Test, unseen annotators"),
                ],
                default="",
                max_length=12,
            ),
            preserve_default=False,
        ),
        migrations.RunPython(assign_splits, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="rating",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "split__in",
                        ("train", "val_seen", "val_unseen", "test_seen", "test_unseen"),
                    )
                ),
                name="rating_split_valid",
            ),
        ),
        migrations.AddIndex(
            model_name="rating",
            index=models.Index(fields=["study", "split"], name="rating_by_split"),
        ),
    ]
