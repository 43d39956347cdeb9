"""Scripted annotators for the quality-control tests and ``benchmarks/qc_bots.py``.

Two ways in, as a script would use them: ``PageAnnotator`` posts the rating
page's plain forms (no JavaScript), ``ApiAnnotator`` uses the REST API with a
token. Each sees only what a client sees (the item's opaque token); a
*strategy* picks the score from what the script saw and, for the
``informed`` strategy only, from the server's records (the worst case: a bot
that somehow answers every check right and copies its earlier score on every
repeat).

Time on item is simulated: instead of sleeping, ``dwell_ms`` moves the shown
item's clock back (``shown_at`` of every live lease and shown stream item of
the annotator, whatever their kind) before each answer.
"""

from __future__ import annotations

import random
import re
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import F
from django.urls import reverse
from rest_framework.authtoken.models import Token

from annotation import services
from annotation.models import (
    AnnotatorQuality,
    Assignment,
    Rating,
    StreamItem,
    Study,
)
from tests.factories import StudyFactory, make_images, png_bytes
from tests.items import row_of

PAUSED = "paused"
_SCREEN = re.compile(r'data-assignment="([A-Za-z0-9_-]{22})"')
CHECK_ANSWERS = (1, 3, 5, 7)  # one check per answer, on the 1-7 scale


def qc_study(*, n_images: int = 150, check_rate: float = 0.2, slug: str = "") -> Study:
    """A study with quality control on: four checks (each asking for another
    key), attention checks after a fifth of ratings, repeats after a tenth,
    automatic pause after three failed checks or 60% too-fast ratings."""
    study = StudyFactory(
        raters_per_image=3,
        quota_per_annotator=n_images,
        **({"slug": slug} if slug else {}),
    )
    make_images(study, n_images, start=study.pk * 1000)
    for i, expected in enumerate(CHECK_ANSWERS):
        services.attention_check_create(
            study=study,
            data=png_bytes(900_000 + study.pk * 10 + i),
            expected_min=expected,
        )
    services.quality_config_update(
        study=study,
        attention_check_rate=check_rate,
        repeat_rate=0.1,
        repeat_gap=5,
        auto_pause=True,
        hard_check_failures=3,
        min_checks=3,
    )
    return study


# --- the two ways in ------------------------------------------------------------


class PageAnnotator:
    """The rating page through its plain forms (post/redirect/get)."""

    def __init__(self, client, study: Study):
        self.client, self.study = client, study
        self.page = reverse("annotation:rate", args=[study.slug])

    def next(self) -> str | None:
        r = self.client.get(self.page)
        if r.status_code == 403:
            return PAUSED
        if r.status_code == 302:
            return None  # done
        return _SCREEN.search(r.content.decode()).group(1)

    def answer(self, token: str, score: int) -> int:
        url = reverse("annotation:item_rate", args=[self.study.slug, token])
        return self.client.post(url, {"score": str(score)}).status_code


class ApiAnnotator:
    """``POST assignments/next/`` and ``POST assignments/{id}/rating/``."""

    def __init__(self, client, study: Study):
        self.client, self.study = client, study

    @classmethod
    def token_client(cls, client_class, annotator, study: Study) -> ApiAnnotator:
        token, _ = Token.objects.get_or_create(user=annotator.user)
        return cls(client_class(HTTP_AUTHORIZATION=f"Token {token.key}"), study)

    def next(self) -> str | None:
        r = self.client.post(f"/api/v1/studies/{self.study.pk}/assignments/next/")
        if r.status_code == 403:
            return PAUSED
        if r.status_code == 204:
            return None
        return r.json()["id"]

    def answer(self, token: str, score: int) -> int:
        r = self.client.post(
            f"/api/v1/assignments/{token}/rating/",
            {"score": score},
            content_type="application/json",
        )
        return r.status_code


# --- strategies ---------------------------------------------------------------------


def random_keys(rng: random.Random, token: str) -> int:
    return rng.randint(1, 7)


def constant_key(rng: random.Random, token: str) -> int:
    return 4


def informed(rng: random.Random, token: str) -> int:
    """Right on every check, the earlier score on every repeat (read from the
    server's records: no client could), a plausible score otherwise."""
    row = row_of(token)
    if isinstance(row, StreamItem) and row.kind == StreamItem.Kind.ATTENTION:
        return row.check_item.expected_min
    if isinstance(row, StreamItem) and row.kind == StreamItem.Kind.REPEAT:
        return row.source_rating.score
    return rng.randint(2, 6)


STRATEGIES = {"random": random_keys, "constant": constant_key, "informed": informed}


@dataclass
class BotRun:
    items: int = 0  # answers posted before the pause (or the end)
    paused: bool = False
    flags: list = field(default_factory=list)
    kinds: dict = field(default_factory=dict)


def _dwell(annotator_id: int, ms: int) -> None:
    back = timedelta(milliseconds=ms)
    Assignment.objects.filter(
        annotator_id=annotator_id, status="leased", shown_at__isnull=False
    ).update(shown_at=F("shown_at") - back)
    StreamItem.objects.filter(
        annotator_id=annotator_id, status="pending", shown_at__isnull=False
    ).update(shown_at=F("shown_at") - back)


def run_bot(
    way,
    annotator,
    strategy,
    *,
    dwell_ms: int,
    max_items: int,
    seed: int = 0,
    commit=nullcontext,
) -> BotRun:
    """Answer until paused, done or ``max_items``; ``commit`` wraps each
    request (tests pass pytest-django's on-commit runner)."""
    rng = random.Random(seed)
    run = BotRun()
    while run.items < max_items:
        with commit():
            token = way.next()
        if token == PAUSED:
            run.paused = True
            break
        if token is None:
            break
        _dwell(annotator.pk, dwell_ms)
        with commit():
            status = way.answer(token, strategy(rng, token))
        if status == 403:
            run.paused = True
            break
        run.items += 1
    quality = AnnotatorQuality.objects.filter(annotator=annotator).first()
    run.flags = list(quality.flags) if quality else []
    run.kinds = {
        "counted": Rating.objects.filter(annotator=annotator).count(),
        **{
            kind: StreamItem.objects.filter(
                annotator=annotator, kind=kind, status="answered"
            ).count()
            for kind in ("attention", "repeat")
        },
    }
    annotator.refresh_from_db()
    run.paused = run.paused or annotator.status == "paused"
    return run
