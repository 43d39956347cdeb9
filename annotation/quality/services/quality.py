"""Quality control: uncounted stream items, running quality statistics, flags.

*Stream items* are dealt into an annotator's stream between counted images
(attention checks, repeats of an image they rated before; other kinds such as
blind paired tests can reuse the mechanism). They are not Assignments and their
answers are not Ratings, so they never touch ``Image.rating_count`` /
``lease_count``, never count toward an image's 15 ratings, and never reach
training or export (which read Ratings).

*Quality statistics* (``AnnotatorQuality``) are updated incrementally by each
rating (``rating_recorded``, called by the engine inside the rating's
transaction) and each stream answer; flags are re-derived from those running
sums, so nothing rescans an annotator's history.

Lock order: this module locks its own rows (AnnotatorQuality, StreamItem) after
the engine's (Assignment, Image, Rating). An automatic pause runs after commit,
through ``annotator_moderate``, which takes the Annotator lock first as usual.
"""

import random
from datetime import datetime
from math import sqrt

from django.db import connection, transaction
from django.db.models import Avg, Count, FloatField, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotation.models import (
    Annotator,
    AnnotatorQuality,
    AttentionCheck,
    ModerationEvent,
    QualityConfig,
    Rating,
    StreamItem,
    Study,
)
from annotation.quality.services.checks import quality_config_get
from core.exceptions import Conflict, InvalidInput, NotFound

# Upper edges (ms) of the time-on-item histogram; the last bucket is open.
TIME_EDGES_MS = [
    500,
    1000,
    1500,
    2000,
    3000,
    4000,
    6000,
    8000,
    12000,
    16000,
    24000,
    32000,
    60000,
    120000,
]

FLAG_LABELS = {
    "failed_checks": "Fails attention checks",
    "too_fast": "Too fast",
    "straight_lining": "Straight-lining",
    "low_agreement": "Low agreement with others",
    "low_retest": "Low test-retest",
}

_rng = random.SystemRandom()


# --- running statistics ---------------------------------------------------------


def pair_add(sums: list, x: float, y: float) -> list:
    """Add one (x, y) pair to running sums [n, Σx, Σy, Σx², Σy², Σxy]."""
    n, sx, sy, sxx, syy, sxy = sums if len(sums) == 6 else [0, 0, 0, 0, 0, 0]
    return [n + 1, sx + x, sy + y, sxx + x * x, syy + y * y, sxy + x * y]


def pair_corr(sums: list) -> float | None:
    """Pearson correlation from running sums (None when undefined)."""
    if len(sums) != 6 or sums[0] < 3:
        return None
    n, sx, sy, sxx, syy, sxy = sums
    vx, vy = n * sxx - sx * sx, n * syy - sy * sy
    if vx <= 1e-12 or vy <= 1e-12:
        return None
    return (n * sxy - sx * sy) / sqrt(vx * vy)


def time_bucket(ms: int) -> int:
    for i, edge in enumerate(TIME_EDGES_MS):
        if ms < edge:
            return i
    return len(TIME_EDGES_MS)


def time_median_ms(hist: list) -> float | None:
    """Median from the histogram, interpolated within its bucket."""
    total = sum(hist or [])
    if not total:
        return None
    half, seen = total / 2, 0
    for i, count in enumerate(hist):
        if count and seen + count >= half:
            lo = TIME_EDGES_MS[i - 1] if i else 0
            hi = TIME_EDGES_MS[i] if i < len(TIME_EDGES_MS) else lo * 2
            return lo + (hi - lo) * (half - seen) / count
        seen += count
    return None


def _locked_quality(
    annotator_id: int, study_id: int, *, others_of: Rating | None = None
) -> AnnotatorQuality:
    """The annotator's statistics row, locked, with the study's QC settings
    (``quality.study.quality_config``) in the same query; with ``others_of``, also
    the count and mean of the other valid ratings of that rating's image
    (``others_n``, ``others_mean``): one query on the rating path, not three."""
    qs = (
        AnnotatorQuality.objects.select_for_update(of=("self",))
        .select_related("study__quality_config")
        .filter(annotator_id=annotator_id, study_id=study_id)
    )
    if others_of is not None:
        others = (
            Rating.objects.filter(image_id=others_of.image_id, is_valid=True)
            .exclude(pk=others_of.pk)
            .order_by()
            .values("image_id")
        )
        qs = qs.annotate(
            others_n=Subquery(
                others.annotate(n=Count("pk")).values("n"),
                output_field=IntegerField(),
            ),
            others_mean=Subquery(
                others.annotate(m=Avg("score")).values("m"),
                output_field=FloatField(),
            ),
        )
    quality = qs.first()
    if quality is None:
        # First rating of this annotator here (a concurrent request may make it
        # too: ON CONFLICT DO NOTHING, no savepoint).
        AnnotatorQuality.objects.bulk_create(
            [AnnotatorQuality(annotator_id=annotator_id, study_id=study_id)],
            ignore_conflicts=True,
        )
        quality = qs.get()
    return quality


def _config_of(quality: AnnotatorQuality) -> QualityConfig:
    try:
        return quality.study.quality_config
    except QualityConfig.DoesNotExist:
        return quality_config_get(study=quality.study)


def quality_flags(*, quality: AnnotatorQuality, config: QualityConfig) -> list[str]:
    """The flags the running statistics raise under the study's thresholds."""
    q, c = quality, config
    flags = []
    if (
        q.checks_total
        and q.checks_total >= c.min_checks
        and q.checks_failed / q.checks_total > c.check_fail_share
    ):
        flags.append("failed_checks")
    if q.n_ratings >= c.min_evidence and q.n_fast / q.n_ratings > c.too_fast_share:
        flags.append("too_fast")
    if q.max_run >= c.straightline_run:
        flags.append("straight_lining")
    loo = pair_corr(q.loo_sums)
    if (q.loo_sums or [0])[0] >= c.min_evidence and loo is not None:
        if loo < c.loo_min_corr:
            flags.append("low_agreement")
    retest = pair_corr(q.retest_sums)
    if (q.retest_sums or [0])[0] >= _min_pairs(c) and retest is not None:
        if retest < c.retest_min_corr:
            flags.append("low_retest")
    return flags


def _min_pairs(config: QualityConfig) -> int:
    # Repeats are a small share of an annotator's images: ask for fewer pairs.
    return max(5, config.min_evidence // 2)


def _past_hard_threshold(quality: AnnotatorQuality, config: QualityConfig) -> bool:
    q, c = quality, config
    if q.checks_failed >= c.hard_check_failures:
        return True
    return q.n_ratings >= c.min_evidence and q.n_fast / q.n_ratings >= c.hard_fast_share


def _save_and_police(
    quality: AnnotatorQuality, config: QualityConfig, study: Study
) -> None:
    quality.flags = quality_flags(quality=quality, config=config)
    quality.save()
    if config.auto_pause and _past_hard_threshold(quality, config):
        annotator_id = quality.annotator_id
        transaction.on_commit(lambda: _auto_pause(annotator_id, study))


def quality_police_after_commit(*, annotator_id: int, study_id: int) -> None:
    """Pause the annotator after this transaction commits (the SQL path's
    ``palate_submit`` found them past a hard threshold)."""
    transaction.on_commit(
        lambda: _auto_pause(annotator_id, Study.objects.get(pk=study_id))
    )


def _auto_pause(annotator_id: int, study: Study) -> None:
    from annotation.participants.services.moderation import annotator_moderate

    annotator = Annotator.objects.get(pk=annotator_id)
    if annotator.status != Annotator.Status.ACTIVE:
        return
    try:
        annotator_moderate(
            annotator=annotator,
            action=ModerationEvent.Action.AUTO_PAUSE,
            study=study,
            reason="Past a hard quality threshold (failed checks or too fast).",
        )
    except Conflict:
        pass  # paused, excluded or banned meanwhile: nothing left to do


def rating_recorded(
    *, rating: Rating, now: datetime, study: Study | None = None
) -> None:
    """Fold a new counted rating into its annotator's statistics and flags, and
    maybe schedule uncounted items (an attention check next, a repeat later).

    Runs inside the rating's transaction on the engine's Python path; the SQL
    path's ``palate_submit`` does the same in PL/pgSQL (migration
    ``0011_submit_quality_sql``; ``tests/annotation/test_quality_sql.py`` keeps
    the two in step). Agreement compares the score with the
    mean of the image's earlier valid raters (when at least two rated it before),
    so each rating is compared once, when it arrives."""
    q = _locked_quality(rating.annotator_id, rating.study_id, others_of=rating)
    study = study or q.study
    config = _config_of(q)
    q.n_ratings += 1
    ms = rating.time_on_item_ms
    if ms is not None:
        q.n_fast += ms < config.too_fast_ms
        hist = list(q.time_hist or []) or [0] * (len(TIME_EDGES_MS) + 1)
        hist[time_bucket(ms)] += 1
        q.time_hist = hist
    q.run_length = q.run_length + 1 if q.last_score == rating.score else 1
    q.last_score = rating.score
    q.max_run = max(q.max_run, q.run_length)
    counts = dict(q.score_counts or {})
    counts[str(rating.score)] = counts.get(str(rating.score), 0) + 1
    q.score_counts = counts
    if (q.others_n or 0) >= 2:
        q.loo_sums = pair_add(q.loo_sums, rating.score, float(q.others_mean))
    _schedule(config, q, rating, study)
    _save_and_police(q, config, study)


def _schedule(
    config: QualityConfig, q: AnnotatorQuality, rating: Rating, study: Study
) -> None:
    if config.attention_check_rate > 0 and _rng.random() < config.attention_check_rate:
        check = _pick_check(study, rating.annotator_id)
        if check is not None:
            StreamItem.objects.create(
                study=study,
                annotator_id=rating.annotator_id,
                kind=StreamItem.Kind.ATTENTION,
                check_item=check,
                due_after=q.n_ratings,
            )
    if config.repeat_rate > 0 and _rng.random() < config.repeat_rate:
        StreamItem.objects.create(
            study=study,
            annotator_id=rating.annotator_id,
            kind=StreamItem.Kind.REPEAT,
            image_id=rating.image_id,
            source_rating=rating,
            due_after=q.n_ratings + config.repeat_gap,
        )


def _pick_check(study: Study, annotator_id: int) -> AttentionCheck | None:
    """One of the checks dealt to this annotator the fewest times (random among
    them): every check is dealt once before any is dealt twice, and so on.

    The chosen check is read again, still active, and on PostgreSQL locked FOR
    KEY SHARE: a concurrent ``attention_check_remove`` then waits for this rating
    to commit and finds the new item (so it retires the check rather than delete
    it under the item); a check removed first is simply not dealt."""
    checks = AttentionCheck.objects.filter(study=study, is_active=True)
    dealt = (
        StreamItem.objects.filter(
            annotator_id=annotator_id,
            kind=StreamItem.Kind.ATTENTION,
            check_item_id=OuterRef("pk"),
        )
        .order_by()
        .values("check_item_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    counts = list(
        checks.annotate(
            n=Coalesce(Subquery(dealt, output_field=IntegerField()), 0)
        ).values_list("pk", "n")
    )
    if not counts:
        return None
    fewest = min(n for _, n in counts)
    pk = _rng.choice([pk for pk, n in counts if n == fewest])
    if connection.vendor != "postgresql":  # SQLite: one writer at a time anyway
        return checks.filter(pk=pk).first()
    table = AttentionCheck._meta.db_table
    found = AttentionCheck.objects.raw(
        f'SELECT * FROM "{table}" WHERE id = %s AND is_active FOR KEY SHARE', [pk]
    )
    return next(iter(found), None)


# --- the stream -------------------------------------------------------------------


def stream_item_next(
    *,
    annotator: Annotator,
    study: Study,
    rated: int,
    finished: bool = False,
    now: datetime | None = None,
) -> StreamItem | None:
    """The uncounted item due now (a counted rating made since its ``due_after``;
    any pending item once the annotator has no counted images left), marked as
    shown. The pages and the API deal through ``items.items_deal``, which keeps
    this rule and also names the item after it."""
    qs = StreamItem.objects.filter(
        annotator=annotator, study=study, status=StreamItem.Status.PENDING
    )
    if not finished:
        qs = qs.filter(due_after__lt=rated)
    item = qs.select_related("check_item", "image").order_by("due_after", "pk").first()
    if item is not None and item.shown_at is None:
        item.shown_at = now or timezone.now()
        StreamItem.objects.filter(pk=item.pk, shown_at__isnull=True).update(
            shown_at=item.shown_at
        )
    return item


def _locked_item(item_id: int, annotator: Annotator) -> StreamItem:
    item = (
        StreamItem.objects.select_for_update(of=("self",))
        .select_related("check_item", "source_rating")
        .filter(pk=item_id, annotator=annotator)
        .first()
    )
    if item is None:
        raise NotFound("No such item.")
    return item


def stream_item_answer(
    *, item_id: int, annotator: Annotator, score: int, now: datetime | None = None
) -> tuple[StreamItem, bool]:
    """Record the answer to an uncounted item. Returns (item, created); the same
    answer again is a no-op, another one a Conflict. No Rating is created."""
    now = now or timezone.now()
    with transaction.atomic():
        item = _locked_item(item_id, annotator)
        study = Study.objects.get(pk=item.study_id)
        if isinstance(score, bool) or not isinstance(score, int):
            raise InvalidInput("score must be a whole number.")
        if not study.scale_min <= score <= study.scale_max:
            raise InvalidInput(
                f"score must be between {study.scale_min} and {study.scale_max}."
            )
        # The engine's words for a counted image (engine.rating_submit): the
        # answer must not tell the kinds apart.
        if item.status == StreamItem.Status.ANSWERED:
            if item.score == score:
                return item, False
            raise Conflict(
                f"You already rated this image {item.score}; ratings cannot be changed."
            )
        if item.status == StreamItem.Status.SKIPPED:
            raise Conflict("You skipped this image, so it can no longer be rated.")
        item.score = score
        item.status = StreamItem.Status.ANSWERED
        item.answered_at = now
        item.time_on_item_ms = max(
            0, int((now - (item.shown_at or item.created_at)).total_seconds() * 1000)
        )
        if item.kind == StreamItem.Kind.ATTENTION:
            check = item.check_item
            item.passed = check.expected_min <= score <= check.expected_max
        item.save()
        _fold_answer(item, study)
    return item, True


def _fold_answer(item: StreamItem, study: Study) -> None:
    if item.kind not in (StreamItem.Kind.ATTENTION, StreamItem.Kind.REPEAT):
        return  # other kinds keep their own statistics
    q = _locked_quality(item.annotator_id, study.pk)
    config = _config_of(q)
    if item.kind == StreamItem.Kind.ATTENTION:
        q.checks_total += 1
        q.checks_failed += not item.passed
    else:
        first = item.source_rating.score
        q.retest_sums = pair_add(q.retest_sums, first, item.score)
        q.retest_abs_diff += abs(first - item.score)
    _save_and_police(q, config, study)


def stream_item_skip(
    *, item_id: int, annotator: Annotator, now: datetime | None = None
) -> StreamItem:
    """Skip an uncounted item (never held against the annotator). Like
    ``engine.assignment_skip``: again is a no-op, after an answer a Conflict."""
    with transaction.atomic():
        item = _locked_item(item_id, annotator)
        if item.status == StreamItem.Status.ANSWERED:
            raise Conflict("You already rated this image.")
        if item.status == StreamItem.Status.PENDING:
            item.status = StreamItem.Status.SKIPPED
            item.answered_at = now or timezone.now()
            item.save(update_fields=["status", "answered_at"])
    return item
