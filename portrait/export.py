"""The participants' "this is me / this is not me" answers in the study's dataset
export: the ``portrait_feedback`` config (``annotation.hooks.ExportTable``,
registered in ``apps.ready``). Uncounted answers, never ratings: a table of
their own, of the annotators the export carries only (its filters and erasure
decide who), by the export's keys (``annotator_id``: the pseudonymous public
id; ``image_id``: the image's id, as in ``images``)."""

from __future__ import annotations

from annotation.hooks import ExportTable

from .models import ANSWER_FIELDS, PortraitFeedback

CONFIG = "portrait_feedback"
WHEN = "timestamp[us, tz=UTC]"

COLUMNS = (
    ("annotator_id", "string", "pseudonymous id (annotators)"),
    ("image_id", "int64", "the image the portrait predicted for them (images)"),
    ("answer", "string", "me (this is me) or not_me (this is not me)"),
    (
        "side",
        "string",
        "like (shown among the images predicted to be liked most) or dislike (least)",
    ),
    (
        "predicted",
        "float64",
        "the model's predicted score on the study scale when they answered",
    ),
    (
        "spread",
        "float64",
        "the model's posterior sd of their own part of that score (study scale)",
    ),
    ("model_version", "int64", "the reward model version that predicted it"),
    ("n_ratings", "int64", "their counted ratings when they answered"),
    ("created_at", WHEN, "when they first answered"),
    ("updated_at", WHEN, "when they last changed the answer"),
)


def _answers(*, study, annotators):
    return PortraitFeedback.objects.filter(
        study=study, annotator__in=annotators.values("pk")
    )


def feedback_export_rows(*, study, annotators):
    return (
        _answers(study=study, annotators=annotators)
        .order_by("annotator__public_id", "image_id")
        .values_list("annotator__public_id", "image_id", *ANSWER_FIELDS)
        .iterator(chunk_size=5000)
    )


def feedback_export_count(*, study, annotators) -> int:
    return _answers(study=study, annotators=annotators).count()


def feedback_card(n: int) -> list[str]:
    return [
        "## Taste portrait feedback",
        "",
        f"The `{CONFIG}` config holds {n:,} answers that annotators gave on "
        "their taste portrait, a page showing them the images the reward model "
        "predicted they would like most and least among those they had not rated: "
        '"this is me" or "this is not me", with what the model predicted when they '
        "answered. These answers are not ratings: they are in no split of "
        "`ratings`, and no model was trained on them.",
    ]


TABLE = ExportTable(
    config=CONFIG,
    columns=COLUMNS,
    rows=feedback_export_rows,
    count=feedback_export_count,
    card=feedback_card,
)
