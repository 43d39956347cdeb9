"""Checks on incoming image files (real image, allowed format, pixel limit) and
normalisation of what annotators will see.

Annotators must all see the same still picture the right way up, whatever the
file's quirks, so an image is stored normalised: EXIF orientation applied;
colours converted to 8-bit sRGB (CMYK, 16-bit, a non-sRGB ICC profile); an
animated WebP or APNG reduced to its first frame. A file that needs none of this
is stored byte for byte. What was done is returned (``InspectedImage.normalised``)
and recorded in the image's provenance and the import report.
"""

import hashlib
import io
import warnings
from dataclasses import dataclass, field

from django.conf import settings
from PIL import Image as PILImage
from PIL import ImageCms, ImageOps

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
    normalised: list[str] = field(default_factory=list)


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
                normalised, notes = _normalise(img)
    except InvalidInput:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
        raise InvalidInput(
            f"{name}: the image is too large to decode safely."
        ) from None
    except Exception as exc:  # Pillow raises many types for bad files
        raise InvalidInput(f"{name}: not a readable image ({exc}).") from None
    if notes:
        data, fmt = _encode(normalised, fmt)
        width, height = normalised.size
    return InspectedImage(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        width=width,
        height=height,
        format=fmt,
        extension=ALLOWED_FORMATS[fmt],
        normalised=notes,
    )


# Modes browsers show as 8-bit colour as they are; anything else is converted.
_PLAIN_MODES = {"RGB", "RGBA", "L", "LA", "P", "1"}
_SRGB_NAMES = ("srgb", "iec61966")


def _normalise(img: PILImage.Image) -> tuple[PILImage.Image, list[str]]:
    """The still, upright, 8-bit sRGB picture and what it took to get there."""
    notes = []
    if getattr(img, "is_animated", False) and getattr(img, "n_frames", 1) > 1:
        img.seek(0)
        notes.append(f"animated ({img.n_frames} frames): first frame kept")
        img = img.copy()
    orientation = img.getexif().get(0x0112, 1)
    if orientation not in (1, None):
        img = ImageOps.exif_transpose(img)
        notes.append(f"EXIF orientation {orientation} applied")
    icc = img.info.get("icc_profile")
    if icc and not _is_srgb(icc):
        img = _to_srgb(img, icc)
        notes.append("colours converted from the embedded ICC profile to sRGB")
    if img.mode not in _PLAIN_MODES:
        before = img.mode
        img = _to_8bit(img)
        notes.append(f"{before} converted to 8-bit {img.mode}")
    return img, notes


def _is_srgb(icc: bytes) -> bool:
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = ImageCms.getProfileDescription(profile).lower()
    except Exception:  # an unreadable profile: treat as not sRGB, convert
        return False
    return any(name in description for name in _SRGB_NAMES)


def _to_srgb(img: PILImage.Image, icc: bytes) -> PILImage.Image:
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    target = ImageCms.createProfile("sRGB")
    mode = "RGBA" if "A" in img.getbands() else "RGB"
    try:
        out = ImageCms.profileToProfile(img, source, target, outputMode=mode)
    except Exception:  # profile and pixels disagree: plain conversion instead
        out = img.convert(mode)
    out.info.pop("icc_profile", None)  # now plain sRGB: the old profile would lie
    return out


def _to_8bit(img: PILImage.Image) -> PILImage.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # Scale the full range down to 0..255 (a plain convert would clip).
        lo, hi = img.getextrema()
        scale = 255 / (hi - lo) if hi > lo else 1
        return img.point(lambda v: (v - lo) * scale).convert("L")
    return img.convert("RGBA" if "A" in img.getbands() else "RGB")


def _encode(img: PILImage.Image, fmt: str) -> tuple[bytes, str]:
    """Re-encode a normalised image: JPEG stays JPEG (quality 95), anything else
    becomes PNG (lossless; the first frame of an animation is a still)."""
    buf = io.BytesIO()
    if fmt == "JPEG" and img.mode in ("RGB", "L"):
        img.save(buf, format="JPEG", quality=95)
        return buf.getvalue(), "JPEG"
    img.save(buf, format="PNG")
    return buf.getvalue(), "PNG"
