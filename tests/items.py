"""Helpers for tests that read what an annotator is shown: the opaque token of
the item on screen, the row it names, and its URLs."""

import re

from django.urls import reverse

from annotation.engine.item_tokens import (
    ASSIGNMENT,
    MEDIA,
    STREAM,
    item_resolve,
    item_token,
)
from annotation.models import Assignment, StreamItem


def on_screen(body: str) -> str:
    """The token of the item the rating page shows."""
    return re.search(r'data-assignment="([A-Za-z0-9_-]{22})"', body).group(1)


def row_of(token: str):
    """The Assignment or StreamItem a token names."""
    kind, pk = item_resolve(token)
    model = Assignment if kind == ASSIGNMENT else StreamItem
    return model.objects.get(pk=pk)


def token_of(row) -> str:
    kind = ASSIGNMENT if isinstance(row, Assignment) else STREAM
    return item_token(kind=kind, pk=row.pk)


def picture_url(row) -> str:
    kind = ASSIGNMENT if isinstance(row, Assignment) else STREAM
    return reverse("media_item", args=[item_token(kind=kind, pk=row.pk, purpose=MEDIA)])


def rate_url(study, token: str) -> str:
    return reverse("annotation:item_rate", args=[study.slug, token])


def skip_url(study, token: str) -> str:
    return reverse("annotation:item_skip", args=[study.slug, token])
