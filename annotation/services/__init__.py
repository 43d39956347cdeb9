"""The annotation app's whole write API in one namespace.

Each room keeps its own writes (``annotation.studies.services``,
``annotation.engine.services``, ``annotation.quality.services``,
``annotation.datasets.services``, ``annotation.integrity.services``,
``annotation.participants.services``); this module re-exports their public names.
"""

from annotation.datasets.services.import_ratings import RatingRecord, ratings_import
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
    item_next_after_answer,
    item_picture,
    item_skip,
    item_timed_out,
    items_deal,
)
from annotation.engine.services.picking import engine_dealer, engine_seed, starts_draw
from annotation.engine.services.ratings import assignment_skip, rating_submit
from annotation.integrity.services import (
    Drift,
    integrity_alert,
    integrity_check,
    integrity_repair,
)
from annotation.participants.services.erasure import annotator_erase
from annotation.participants.services.moderation import (
    PAUSE_HOLD_SECONDS,
    annotator_exclude_everywhere,
    annotator_moderate,
    participation_exclude,
    participation_pause,
    participation_resume,
)
from annotation.quality.services.checks import (
    attention_check_create,
    attention_check_remove,
    quality_config_get,
    quality_config_update,
)
from annotation.quality.services.quality import (
    stream_item_answer,
    stream_item_next,
    stream_item_skip,
)
from annotation.quality.services.uncounted import uncounted_items_create
from annotation.studies.services.demo import demo_study_ensure
from annotation.studies.services.entry import (
    DEMOGRAPHIC_FIELDS,
    annotator_join,
    entry_ids_clean,
    participation_admission_check,
    participation_complete,
    participation_consent,
    participation_start,
    prolific_session_check,
    study_invite_check,
)
from annotation.studies.services.studies import (
    annotator_create,
    annotator_get_or_create_for_user,
    image_create,
    participation_get_or_create,
    study_create,
)

__all__ = [
    "Answer",
    "Shown",
    "item_answer",
    "item_next",
    "item_next_after_answer",
    "item_picture",
    "item_skip",
    "item_timed_out",
    "items_deal",
    "uncounted_items_create",
    "DEMOGRAPHIC_FIELDS",
    "MAX_HOLD",
    "Drift",
    "PAUSE_HOLD_SECONDS",
    "annotator_moderate",
    "annotator_exclude_everywhere",
    "participation_exclude",
    "attention_check_create",
    "attention_check_remove",
    "participation_pause",
    "participation_resume",
    "quality_config_get",
    "quality_config_update",
    "stream_item_answer",
    "stream_item_next",
    "stream_item_skip",
    "annotator_create",
    "annotator_erase",
    "annotator_get_or_create_for_user",
    "annotator_join",
    "annotator_set_status",
    "assignment_claim",
    "assignment_claim_for_page",
    "PageClaim",
    "assignment_skip",
    "demo_study_ensure",
    "entry_ids_clean",
    "engine_dealer",
    "starts_draw",
    "engine_seed",
    "image_create",
    "integrity_alert",
    "integrity_check",
    "integrity_repair",
    "lease_expire",
    "participation_admission_check",
    "participation_complete",
    "participation_consent",
    "participation_get_or_create",
    "participation_start",
    "prolific_session_check",
    "RatingRecord",
    "rating_submit",
    "ratings_import",
    "study_create",
    "study_invite_check",
]
