"""The annotation app's models, one module per room (Django registers them from here).

Every table keeps its ``annotation_*`` name and the app label ``annotation``; each
room's ``models.py`` holds its own rows. The callables the migrations name
(``annotation.models._token``, ``image_upload_to``, ...) are re-exported so the
migration history stays untouched.
"""

from annotation.datasets.models import Export
from annotation.engine.models import (
    Assignment,
    DealingRank,
    DealingState,
    Rating,
    RatingTally,
    StudyTally,
)
from annotation.integrity.models import IntegrityAlert
from annotation.participants.models import ErasedIdentifier, ModerationEvent
from annotation.quality.models import (
    AnnotatorQuality,
    AttentionCheck,
    QualityConfig,
    StreamItem,
    check_upload_to,
)
from annotation.studies.models import (
    DEMOGRAPHIC_FIELDS,
    RATERS_LOCKED,
    Annotator,
    Image,
    Participation,
    Study,
    _default_scale_labels,
    _public_id,
    _shuffle,
    _token,
    image_upload_to,
)

__all__ = [
    "DEMOGRAPHIC_FIELDS",
    "RATERS_LOCKED",
    "Annotator",
    "AnnotatorQuality",
    "Assignment",
    "AttentionCheck",
    "DealingRank",
    "DealingState",
    "ErasedIdentifier",
    "Export",
    "Image",
    "IntegrityAlert",
    "ModerationEvent",
    "Participation",
    "QualityConfig",
    "Rating",
    "RatingTally",
    "StreamItem",
    "Study",
    "StudyTally",
    "_default_scale_labels",
    "_public_id",
    "_shuffle",
    "_token",
    "check_upload_to",
    "image_upload_to",
]
