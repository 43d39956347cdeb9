"""Writes for the annotation app, one module per sub-domain:

* ``studies``: studies, annotator accounts, participations, image intake;
* ``engine``: the assignment engine (claim, rate, skip, expire, status changes);
* ``quality``: quality control (uncounted stream items, running statistics, flags);
* ``items``: what an annotator is shown, one shape and one token for every kind;
* ``uncounted``: uncounted items another app asks one annotator to judge blind;
* ``moderation``: staff pause/resume, exclusion from one study or from every study,
  with an audit log; the annotator's pause;
* ``entry``: entering a study through the browser (links, consent, completion);
* ``erasure``: a participant's right to be forgotten (exclude, then pseudonymise);
* ``integrity``: the invariant check and repair shared by tests and operations;
* ``demo``: the demo study, its staff login and demo annotators (``seed_demo``);
* ``imports``: a per-annotator ratings dataset as study ratings.

The names below are the app's public write API; import them from here.
"""

from .demo import demo_study_ensure
from .engine import (
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
    starts_draw,
)
from .entry import (
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
from .erasure import annotator_erase
from .imports import RatingRecord, ratings_import
from .integrity import Drift, integrity_alert, integrity_check, integrity_repair
from .items import (
    Answer,
    Shown,
    item_answer,
    item_next,
    item_picture,
    item_skip,
    item_timed_out,
    items_deal,
)
from .moderation import (
    PAUSE_HOLD_SECONDS,
    annotator_exclude_everywhere,
    annotator_moderate,
    participation_exclude,
    participation_pause,
    participation_resume,
)
from .quality import (
    attention_check_create,
    attention_check_remove,
    quality_config_get,
    quality_config_update,
    stream_item_answer,
    stream_item_next,
    stream_item_skip,
)
from .studies import (
    annotator_create,
    annotator_get_or_create_for_user,
    image_create,
    participation_get_or_create,
    study_create,
)
from .uncounted import uncounted_items_create

__all__ = [
    "Answer",
    "Shown",
    "item_answer",
    "item_next",
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
