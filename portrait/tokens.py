"""Opaque names for the portrait's pictures (``annotation.engine.selectors``'
``image_token``, kind ``IMAGE``): the picture under ``/media/i/<token>`` like
every image a participant sees, and a second token of another purpose in the
feedback form, so no image id ever reaches the page."""

from django.urls import reverse

from annotation.engine.selectors import image_token, image_token_resolve

FEEDBACK = b"F"


def picture_url(image_id: int) -> str:
    return reverse("media_item", args=[image_token(image_id=image_id)])


def feedback_token(image_id: int) -> str:
    return image_token(image_id=image_id, purpose=FEEDBACK)


def feedback_image_id(token: str) -> int:
    """The image a feedback token names; NotFound for anything else."""
    return image_token_resolve(token=token, purpose=FEEDBACK)
