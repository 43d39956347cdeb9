"""Writes of the assignment engine: claim, rate, skip, expire, status changes
(``engine``, with its PL/pgSQL path ``engine_sql``), what an annotator is shown
(``items``) and the dealing policy with its rankings (``dealing``).

The names below are this room's public write API; import them from here.
"""

from annotation.engine.services.dealing import (
    ADAPTIVE,
    FULLEST_FIRST,
    POLICIES,
    dealing_candidates,
    dealing_policy_set,
    dealing_ranking_replace,
)
from annotation.engine.services.engine import (
    MAX_HOLD,
    PageClaim,
    annotator_set_status,
    assignment_claim,
    assignment_claim_for_page,
    lease_expire,
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
from annotation.engine.services.picking import engine_dealer, engine_seed, starts_draw
from annotation.engine.services.ratings import assignment_skip, rating_submit

__all__ = [
    "ADAPTIVE",
    "FULLEST_FIRST",
    "POLICIES",
    "dealing_candidates",
    "dealing_policy_set",
    "dealing_ranking_replace",
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
    "starts_draw",
    "Answer",
    "Shown",
    "item_answer",
    "item_next",
    "item_picture",
    "item_skip",
    "item_timed_out",
    "items_deal",
]
