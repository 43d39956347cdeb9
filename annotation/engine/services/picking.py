"""Which image a claim deals: fullest first, random among equals, in a bounded
window per fill level (``image_pick``), and the dealer the randomness comes from
(seeded in tests and seeded benchmarks, never in production). ``palate_claim``
(``annotation/engine/sql/palate_claim.sql``) does the same in PL/pgSQL."""

import random
import time

from django.db import connection

from annotation.models import Annotator, Assignment, Image, Study

# "Random among equals" draws from here; tests and benchmarks seed it
# (engine_seed) so that a run deals the same way twice.
_dealer = random.Random()


def engine_seed(*, seed: int) -> None:
    """Make the engine's dealing reproducible (tests, seeded benchmarks)."""
    _dealer.seed(seed)


def engine_dealer() -> random.Random:
    """The dealer the engine draws from (the SQL path is handed its draws)."""
    return _dealer


# How many images of one fill level a pick reads from its random starting point
# (each way round) before it moves up a level: a claim's cost does not grow
# with how many of them the annotator was already dealt (issue 29). The same
# number is written in palate_claim (annotation/engine/sql/palate_claim.sql).
PICK_WINDOW = 32


class Starts:
    """The random starting points of one claim, one per fill level tried: the
    dealer's draws (``starts_draw``), then a fixed sequence derived from the
    last one (palate_claim derives the same), so the SQL and the Python path
    deal alike from the same draws however many levels they try."""

    def __init__(self, drawn: list[int]):
        self.drawn, self.used, self.last = drawn, 0, 0

    def next(self) -> int:
        if self.used < len(self.drawn):
            self.last = self.drawn[self.used]
        else:
            self.last = (self.last * 1103515245 + 12345) % 2**31
        self.used += 1
        return self.last


def starts_draw(hold: int) -> list[int]:
    """What one claim of ``hold`` leases draws from the dealer (both paths)."""
    return [_dealer.randrange(2**31) for _ in range(2 * hold + 2)]


def _candidates(annotator: Annotator, exclude: set[int], alias: str, probe=False):
    """The shared WHERE: not dealt to this annotator, not picked in this claim.

    ``probe``: one index probe per row read (``OFFSET 0`` keeps PostgreSQL
    from turning the NOT EXISTS into a hash anti-join, which would read every
    assignment the annotator ever had)."""
    offset = " OFFSET 0" if probe and connection.vendor == "postgresql" else ""
    sql = (
        f"NOT EXISTS (SELECT 1 FROM {Assignment._meta.db_table} a "
        f"WHERE a.image_id = {alias}.id AND a.annotator_id = %s{offset})"
    )
    params = [annotator.pk]
    if exclude:
        sql += f" AND {alias}.id NOT IN ({', '.join(['%s'] * len(exclude))})"
        params += sorted(exclude)
    return sql, params


def _image_row(row) -> Image | None:
    if row is None:
        return None
    return Image.from_db(connection.alias, ["id", "file", "width", "height"], row)


_LEVEL = (
    "SELECT i.open_slots FROM {image} i WHERE i.study_id = %s "
    "AND i.open_slots > 0 AND i.open_slots > %s ORDER BY i.open_slots LIMIT 1"
)
# One level's window, each way round from the start: the images up to the
# PICK_WINDOW-th in shuffle order (the bound is read once, from the index),
# scanned lazily in that order until one passes.
_SIDE = (
    "SELECT i.id, i.file, i.width, i.height FROM {image} i "
    "WHERE i.study_id = %s AND i.open_slots > 0 AND i.open_slots = %s "
    "AND i.shuffle {op} %s AND i.shuffle <= coalesce(("
    "SELECT b.shuffle FROM {image} b WHERE b.study_id = %s "
    "AND b.open_slots > 0 AND b.open_slots = %s AND b.shuffle {op} %s "
    "ORDER BY b.shuffle LIMIT 1 OFFSET {last}), 2147483647) "
    "AND {where} ORDER BY i.shuffle LIMIT 1{skip}"
)


def image_pick(
    annotator: Annotator,
    study: Study,
    exclude: set[int],
    starts: Starts,
    *,
    may_wait: bool = False,
) -> Image | None:
    """Lock one image with a free slot that this annotator has never been dealt.

    Fullest images first (fewest open slots), random among equals: at each fill
    level, from a random point in the fixed ``shuffle`` order, the first of the
    next ``PICK_WINDOW`` images (wrapping round) that is neither dealt to the
    annotator nor locked by another claim; else the next level up. Each level
    tried reads at most 2 × ``PICK_WINDOW`` rows, however long the annotator's
    history. ``may_wait`` (the claim has dealt no image yet): when no level
    gives one, the exact search (``_pick_waiting``), repeated while an image
    open to the annotator is held by another transaction, so a claim does not
    answer "nothing left" while an image is open to this annotator.

    Plain SQL rather than querysets: this runs on every claim, and building the
    equivalent ORM queries cost more CPU than PostgreSQL spends executing them.
    """
    image = Image._meta.db_table
    # Every query on images says ``open_slots > 0`` even where another condition
    # implies it: only then can PostgreSQL use the partial ``image_open_queue``.
    where, params = _candidates(annotator, exclude, "i", probe=True)
    # SQLite has no row locks (its IMMEDIATE transactions serialise writers).
    lock = connection.features.has_select_for_update_skip_locked
    skip = " FOR NO KEY UPDATE OF i SKIP LOCKED" if lock else ""
    level_sql, side = _LEVEL.format(image=image), _SIDE
    floor = 0
    with connection.cursor() as cursor:
        while True:
            cursor.execute(level_sql, [study.pk, floor])
            level = cursor.fetchone()
            if level is None:
                break
            start = starts.next()
            for op in (">=", "<"):  # from the start up, then wrapping round
                sql = side.format(
                    image=image, op=op, last=PICK_WINDOW - 1, where=where, skip=skip
                )
                window = [study.pk, level[0], start]
                cursor.execute(sql, [*window, *window, *params])
                row = cursor.fetchone()
                if row is not None:
                    return _image_row(row)
            floor = level[0]  # strictly up: the search ends after the top level
    return _pick_waiting(annotator, study, exclude) if may_wait else None


# How long the exact search before "nothing left" keeps looking while an image
# open to the annotator is held by another transaction (palate_claim: the same).
WAIT_S = 2.0
WAIT_STEP_S = 0.005


def _pick_waiting(annotator: Annotator, study: Study, exclude: set[int]):
    """The exact search before "nothing left": the fullest image open to the
    annotator, searched again while one is held by another transaction (they
    hold an image for milliseconds), for up to ``WAIT_S``. Never waiting on the
    row lock itself: this transaction may hold locks on images it skipped (a
    row updated since the statement's snapshot stays locked when it fails the
    recheck), and two claims waiting so deadlocked."""
    image = Image._meta.db_table
    where, params = _candidates(annotator, exclude, "i")
    skip = ""
    if connection.features.has_select_for_update_skip_locked:
        skip = " FOR NO KEY UPDATE OF i SKIP LOCKED"
    base = f"FROM {image} i WHERE i.study_id = %s AND i.open_slots > 0 AND {where}"
    deadline = time.monotonic() + WAIT_S
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                f"SELECT i.id, i.file, i.width, i.height {base} "
                f"ORDER BY i.open_slots, i.shuffle LIMIT 1{skip}",
                [study.pk, *params],
            )
            row = cursor.fetchone()
            if row is not None or not skip:
                return _image_row(row)
            cursor.execute(f"SELECT 1 {base} LIMIT 1", [study.pk, *params])
            if cursor.fetchone() is None or time.monotonic() > deadline:
                return None
            time.sleep(WAIT_STEP_S)
