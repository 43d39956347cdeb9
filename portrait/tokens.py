"""Opaque names for the portrait's pictures (``annotation.item_tokens``, kind
``IMAGE``): the picture under ``/media/i/<token>`` like every image a
participant sees, and a second token of another purpose in the feedback form,
so no image id ever reaches the page."""

from django.urls import reverse

from annotation.item_tokens import IMAGE, MEDIA, item_resolve, item_token

FEEDBACK = b"F"


def picture_url(image_id: int) -> str:
    return reverse(
        "media_item", args=[item_token(kind=IMAGE, pk=image_id, purpose=MEDIA)]
    )


def feedback_token(image_id: int) -> str:
    return item_token(kind=IMAGE, pk=image_id, purpose=FEEDBACK)


def feedback_image_id(token: str) -> int:
    """The image a feedback token names; NotFound for anything else."""
    return item_resolve(token, purpose=FEEDBACK, kinds=(IMAGE,))[1]
