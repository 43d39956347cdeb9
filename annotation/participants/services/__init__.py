"""Writes about participants: moderation (pause, resume, exclusion, with the audit
log; ``moderation``) and erasure (``erasure``).

The names below are this room's public write API; import them from here.
"""

from annotation.participants.services.erasure import annotator_erase
from annotation.participants.services.moderation import (
    PAUSE_HOLD_SECONDS,
    annotator_exclude_everywhere,
    annotator_moderate,
    participation_exclude,
    participation_pause,
    participation_resume,
)

__all__ = [
    "annotator_erase",
    "PAUSE_HOLD_SECONDS",
    "annotator_exclude_everywhere",
    "annotator_moderate",
    "participation_exclude",
    "participation_pause",
    "participation_resume",
]
