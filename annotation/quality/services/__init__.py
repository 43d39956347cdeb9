"""Writes of quality control: settings, attention checks, uncounted stream items
and running statistics (``quality``); blind items another app asks for
(``uncounted``).

The names below are this room's public write API; import them from here.
"""

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

__all__ = [
    "attention_check_create",
    "attention_check_remove",
    "quality_config_get",
    "quality_config_update",
    "stream_item_answer",
    "stream_item_next",
    "stream_item_skip",
    "uncounted_items_create",
]
