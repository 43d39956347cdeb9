"""Quality control's settings and attention checks: reading and updating a study's
QC configuration, adding and retiring attention checks."""

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from annotation.models import (
    AttentionCheck,
    QualityConfig,
    StreamItem,
    Study,
)
from annotation.studies.images import image_inspect
from annotation.studies.services.studies import file_and_row_save
from core.exceptions import InvalidInput, NotFound

# Upper edges (ms) of the time-on-item histogram; the last bucket is open.


# --- configuration and attention checks -----------------------------------------


def quality_config_get(*, study: Study) -> QualityConfig:
    config = QualityConfig.objects.filter(study=study).first()
    if config is None:
        QualityConfig.objects.bulk_create(
            [QualityConfig(study=study)], ignore_conflicts=True
        )
        config = QualityConfig.objects.get(study=study)
    return config


def quality_config_update(*, study: Study, **fields) -> QualityConfig:
    """Change some of a study's thresholds and rates. Every value is checked
    against the model's validators and CHECK constraints first: one bad value
    changes nothing, and the message names it."""
    known = {f.name for f in QualityConfig._meta.get_fields()} - {"id", "study"}
    unknown = set(fields) - known
    if unknown:
        raise InvalidInput(f"Unknown settings: {', '.join(sorted(unknown))}.")
    quality_config_get(study=study)  # exists from here on
    with transaction.atomic():
        config = QualityConfig.objects.select_for_update().get(study=study)
        for name, value in fields.items():
            setattr(config, name, value)
        try:
            config.full_clean(exclude=["study"])
        except ValidationError as e:
            problems = [
                f"{name}: {' '.join(messages)}" if name != "__all__" else messages[0]
                for name, messages in e.message_dict.items()
            ]
            raise InvalidInput("; ".join(problems)) from None
        config.save()
    return config


def attention_check_create(
    *,
    study: Study,
    data: bytes,
    expected_min: int,
    expected_max: int | None = None,
    instruction: str = "",
    filename: str = "check",
    user=None,
) -> AttentionCheck:
    """Store an attention-check image with the answer(s) that pass it."""
    expected_max = expected_min if expected_max is None else expected_max
    for value in (expected_min, expected_max):
        if not study.scale_min <= value <= study.scale_max:
            raise InvalidInput(
                f"The expected answer must be on the study's scale "
                f"({study.scale_min}–{study.scale_max})."
            )
    if expected_min > expected_max:
        raise InvalidInput("The lowest passing answer is above the highest.")
    info = image_inspect(data=data, name=filename)
    if AttentionCheck.objects.filter(study=study, sha256=info.sha256).exists():
        raise InvalidInput(f"{filename}: this check image is already in the study.")
    check = AttentionCheck(
        study=study,
        sha256=info.sha256,
        width=info.width,
        height=info.height,
        instruction=instruction.strip()[:300],
        expected_min=expected_min,
        expected_max=expected_max,
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    # The unique (study, sha256) constraint catches an upload of the same image
    # at the same instant, which the look above cannot see yet.
    return file_and_row_save(
        check,
        name=f"{info.sha256}.{info.extension}",
        data=data,
        duplicate=f"{filename}: this check image is already in the study.",
    )


def attention_check_remove(*, study: Study, check_id: int) -> bool:
    """Take a check out of the study. Returns True if it was deleted, False if it
    was kept, retired (``is_active`` False), because annotators were dealt it.

    First (one transaction) it is retired, so it is dealt no more, and its items
    not yet shown are withdrawn; items answered, skipped or on screen stay, so
    every pass or failure an annotator was counted for stays explainable. Then, if
    no item refers to it any longer, the row and its file are deleted; an item
    dealt at that very moment (see ``_pick_check``) makes the delete fail, and the
    check simply stays retired."""
    with transaction.atomic():
        found = AttentionCheck.objects.filter(pk=check_id, study=study).update(
            is_active=False
        )
        if not found:
            raise NotFound(f"No attention check {check_id} in this study.")
        StreamItem.objects.filter(
            check_item_id=check_id,
            status=StreamItem.Status.PENDING,
            shown_at__isnull=True,
        ).delete()
    if StreamItem.objects.filter(check_item_id=check_id).exists():
        return False
    check = AttentionCheck.objects.filter(pk=check_id).first()
    if check is None:
        return True  # removed by a concurrent request
    name, storage = check.file.name, check.file.storage
    try:
        with transaction.atomic():
            check.delete()
            # Foreign keys are checked at commit on PostgreSQL: check them here,
            # inside this block, even when a caller's transaction encloses it.
            connection.check_constraints(table_names=[StreamItem._meta.db_table])
    except IntegrityError:
        return False  # dealt to someone meanwhile: kept, retired
    transaction.on_commit(lambda: storage.delete(name))
    return True
