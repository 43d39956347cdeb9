"""Studies, annotator accounts, participations and image intake."""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction

from annotation.models import Annotator, Image, Participation, Study
from annotation.studies.images import image_inspect
from core.exceptions import InvalidInput, NotFound

User = get_user_model()


def study_create(*, name: str, slug: str, created_by=None, **fields) -> Study:
    if not name.strip():
        raise InvalidInput("A study needs a name.")
    if Study.objects.filter(slug=slug).exists():
        raise InvalidInput(f"A study with slug '{slug}' already exists.")
    study = Study(name=name.strip(), slug=slug, created_by=created_by, **fields)
    _validate_study(study)
    study.save()
    return study


def fields_check(instance, *, exclude: tuple[str, ...] = ()) -> None:
    """Run the model's field validators (bounds, JSON shapes, NUL characters,
    lengths) and raise ``InvalidInput`` naming each bad field, so nothing the
    database would refuse reaches it."""
    try:
        instance.clean_fields(exclude=list(exclude))
    except ValidationError as exc:
        problems = "; ".join(
            f"{field}: {' '.join(messages)}"
            for field, messages in exc.message_dict.items()
        )
        raise InvalidInput(f"Invalid input: {problems}") from None


def _validate_study(study: Study) -> None:
    fields_check(study, exclude=("created_by", "invite_token"))
    if study.scale_min >= study.scale_max:
        raise InvalidInput("scale_min must be below scale_max.")
    points = study.scale_max - study.scale_min + 1
    if points > 101:
        raise InvalidInput("A scale has at most 101 points.")
    if study.scale_labels and len(study.scale_labels) != points:
        raise InvalidInput(
            f"scale_labels has {len(study.scale_labels)} labels for {points} points."
        )
    if study.raters_per_image < 1:
        raise InvalidInput("raters_per_image must be at least 1.")
    if study.lease_seconds < 5:
        raise InvalidInput("lease_seconds must be at least 5.")


def annotator_create(
    *,
    source: str = "invite",
    external_id: str = "",
    demographics: dict | None = None,
    username: str | None = None,
) -> Annotator:
    """A passwordless annotator account (pseudonymous: only the public id is shown)."""
    with transaction.atomic():
        annotator = Annotator(
            source=source, external_id=external_id, demographics=demographics or {}
        )
        user = User(username=username or annotator.public_id)
        user.set_unusable_password()
        user.save()
        annotator.user = user
        annotator.save()
    return annotator


def annotator_get_or_create_for_user(user) -> Annotator:
    """The annotator behind a user; staff get one made on first use."""
    try:
        return user.annotator
    except Annotator.DoesNotExist:
        if not user.is_staff:
            raise NotFound("This account is not an annotator.") from None
        try:
            with transaction.atomic():
                return Annotator.objects.create(user=user, source="staff")
        except IntegrityError:
            return Annotator.objects.get(user=user)


def participation_get_or_create(*, annotator: Annotator, study: Study) -> Participation:
    participation, _ = Participation.objects.get_or_create(
        annotator=annotator, study=study
    )
    return participation


def image_create(
    *,
    study: Study,
    data: bytes,
    filename: str = "upload",
    prompt: str = "",
    domain: str = "",
    provenance: dict | None = None,
    journal=None,
) -> Image:
    """Validate and store one image and open its rating slots.

    Raises InvalidInput for non-images, oversize images and duplicates (same bytes
    already in this study). ``journal`` (a ``media_journal.MediaJournal``) is
    told the file's name before it is written (imports: no file without its row).
    """
    info = image_inspect(data=data, name=filename)
    if Image.objects.filter(study=study, sha256=info.sha256).exists():
        raise InvalidInput(
            f"{filename}: this image is already in study '{study.slug}'."
        )
    image = Image(
        study=study,
        sha256=info.sha256,
        width=info.width,
        height=info.height,
        format=info.format,
        prompt=prompt,
        domain=domain,
        provenance=provenance or {},
        target_ratings=study.raters_per_image,
    )
    if info.normalised:
        image.provenance = {**image.provenance, "normalised": info.normalised}
    # Everything about the row is checked before the file is written, so a bad
    # row leaves no file behind; and a row that still fails removes its file.
    fields_check(image, exclude=("file", "study"))
    return file_and_row_save(
        image,
        name=f"{info.sha256}.{info.extension}",
        data=info.data,
        duplicate=f"{filename}: this image is already in study '{study.slug}'.",
        journal=journal,
    )


def file_and_row_save(row, *, name: str, data: bytes, duplicate: str, journal=None):
    """Write ``row``'s file, then the row; a row that fails takes its file with it.
    A unique constraint that refuses it (the same image, e.g. uploaded twice at
    the same instant, past the caller's own look) is ``InvalidInput(duplicate)``."""
    if journal is not None:
        journal.add(row.file.field.generate_filename(row, name))
    row.file.save(name, ContentFile(data), save=False)
    if journal is not None:
        journal.add(row.file.name)  # the storage may have picked another name
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError:
        row.file.delete(save=False)
        raise InvalidInput(duplicate) from None
    except BaseException:
        row.file.delete(save=False)
        raise
    return row
