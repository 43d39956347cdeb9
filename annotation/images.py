"""Checks on incoming image files: real image, allowed format, pixel limit."""

import hashlib
import io
import warnings
from dataclasses import dataclass

from django.conf import settings
from PIL import Image as PILImage

from core.exceptions import InvalidInput

ALLOWED_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}


@dataclass(frozen=True)
class InspectedImage:
    data: bytes
    sha256: str
    width: int
    height: int
    format: str  # PNG, JPEG or WEBP
    extension: str


def image_inspect(*, data: bytes, name: str = "upload") -> InspectedImage:
    """Validate raw bytes as a PNG, JPEG or WebP within the pixel limit.

    Reads the header first, so a decompression bomb is refused before any pixel
    is decoded; then fully decodes to catch truncated or corrupt files.
    """
    if not data:
        raise InvalidInput(f"{name}: the file is empty.")
    max_bytes = settings.PALATE_MAX_UPLOAD_BYTES
    if len(data) > max_bytes:
        raise InvalidInput(
            f"{name}: {len(data)} bytes is over the {max_bytes}-byte limit."
        )
    max_pixels = settings.PALATE_MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data)) as img:
                fmt = img.format
                width, height = img.size
                if width * height > max_pixels:
                    raise InvalidInput(
                        f"{name}: {width}×{height} = {width * height} pixels is over "
                        f"the limit of {max_pixels} pixels."
                    )
                if fmt not in ALLOWED_FORMATS:
                    raise InvalidInput(
                        f"{name}: format {fmt or 'unknown'} is not accepted "
                        "(PNG, JPEG or WebP only)."
                    )
                img.load()
    except InvalidInput:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
        raise InvalidInput(
            f"{name}: the image is too large to decode safely."
        ) from None
    except Exception as exc:  # Pillow raises many types for bad files
        raise InvalidInput(f"{name}: not a readable image ({exc}).") from None
    return InspectedImage(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        width=width,
        height=height,
        format=fmt,
        extension=ALLOWED_FORMATS[fmt],
    )
