"""Writes of the assignment engine: claim, rate, skip, expire, status changes
(``engine``, with its PL/pgSQL path ``engine_sql``) and what an annotator is shown
(``items``).

The names below are this room's public write API; import them from here.
"""

from annotation.engine.services.engine import (
    MAX_HOLD,
    PageClaim,
    annotator_set_status,
    assignment_claim,
    assignment_claim_for_page,
    assignment_skip,
    engine_dealer,
    engine_seed,
    lease_expire,
    rating_submit,
)
from annotation.engine.services.items import (
    Answer,
    Shown,
    item_answer,
    item_next,
    item_picture,
    item_skip,
    item_timed_out,
    items_deal,
)

__all__ = [
    "MAX_HOLD",
    "PageClaim",
    "annotator_set_status",
    "assignment_claim",
    "assignment_claim_for_page",
    "assignment_skip",
    "engine_dealer",
    "engine_seed",
    "lease_expire",
    "rating_submit",
    "Answer",
    "Shown",
    "item_answer",
    "item_next",
    "item_picture",
    "item_skip",
    "item_timed_out",
    "items_deal",
]
