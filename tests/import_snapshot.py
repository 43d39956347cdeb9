"""What an import may change, captured before and after a refused one: every
table it writes and every file under the media folder (journals included)."""

from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model

from annotation.models import Annotator, Image, Participation, Rating


def snapshot() -> dict:
    media = Path(settings.MEDIA_ROOT)
    return {
        "rows": {
            m.__name__: m.objects.count()
            for m in (Annotator, Image, Participation, Rating, get_user_model())
        },
        "files": sorted(
            str(p.relative_to(media)) for p in media.rglob("*") if p.is_file()
        )
        if media.exists()
        else [],
    }
