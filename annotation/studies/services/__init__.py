"""Writes for studies and entry: studies, annotator accounts, participations,
image intake (``studies``), entering a study in the browser (``entry``), the demo
study (``demo``).

The names below are this room's public write API; import them from here.
"""

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
    "demo_study_ensure",
    "DEMOGRAPHIC_FIELDS",
    "annotator_join",
    "entry_ids_clean",
    "participation_admission_check",
    "participation_complete",
    "participation_consent",
    "participation_start",
    "prolific_session_check",
    "study_invite_check",
    "annotator_create",
    "annotator_get_or_create_for_user",
    "image_create",
    "participation_get_or_create",
    "study_create",
]
