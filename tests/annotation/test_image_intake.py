"""Hostile uploads and imports (issue 10, finding 5): capped streaming of zip
entries, no links out of the folder, and images normalised to what annotators
should see (upright, 8-bit sRGB, a still)."""

import io
import os
import resource
import zipfile

import pytest
from django.core.management import call_command
from PIL import Image as PILImage
from PIL import ImageCms

from annotation import services
from annotation.models import Image
from annotation.studies.images import image_inspect
from core.exceptions import InvalidInput
from tests.factories import StudyFactory, png_bytes

pytestmark = pytest.mark.django_db


def _import(study, path) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "import_images", study.slug, str(path), "--no-progress", stdout=out, stderr=err
    )
    return out.getvalue(), err.getvalue()


def test_zip_entry_over_the_cap_is_never_read_whole(tmp_path, settings):
    """A 1 MB zip holding a 1 GiB entry (zeros compress ~1000:1) is skipped
    without reading it: memory stays flat."""
    settings.PALATE_MAX_UPLOAD_BYTES = 5 * 1024 * 1024
    study = StudyFactory()
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ok.png", png_bytes(1))
        with z.open("huge.png", "w", force_zip64=True) as f:
            block = b"\0" * (1 << 20)
            for _ in range(1024):
                f.write(block)
    assert archive.stat().st_size < 3 * 1024 * 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out, err = _import(study, archive)
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert "huge.png: larger than the 5242880-byte limit" in err
    assert Image.objects.count() == 1
    assert grown_kb < 200 * 1024, f"peak memory grew by {grown_kb} KiB"


def test_an_entry_lying_about_its_size_is_cut_off_at_the_cap(tmp_path, settings):
    settings.PALATE_MAX_UPLOAD_BYTES = 1000
    study = StudyFactory()
    archive = tmp_path / "liar.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("big.png", b"\0" * 5000)
    # Rewrite the header's uncompressed size to claim 10 bytes.
    with zipfile.ZipFile(archive) as z:
        info = z.getinfo("big.png")
    from annotation.management.commands.import_images import _read_capped, _TooLarge

    with zipfile.ZipFile(archive) as z, z.open(info) as f, pytest.raises(_TooLarge):
        _read_capped(f, 1000)
    _, err = _import(study, archive)
    assert "big.png: larger than" in err


def test_links_out_of_the_folder_are_refused(tmp_path):
    study = StudyFactory()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png_bytes(7))
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "ok.png").write_bytes(png_bytes(8))
    os.symlink(outside / "secret.png", folder / "link.png")
    os.symlink(outside, folder / "linkdir")
    out, err = _import(study, folder)
    assert "link.png: a link" in err
    assert Image.objects.count() == 1
    # Read in Python: SQLite has no JSON ``contains`` lookup.
    files = [
        p.get("file", "") for p in Image.objects.values_list("provenance", flat=True)
    ]
    assert files and not any("secret" in str(f) for f in files)


def test_zip_symlink_entries_are_refused(tmp_path):
    study = StudyFactory()
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as z:
        info = zipfile.ZipInfo("evil.png")
        info.external_attr = 0o120777 << 16  # a symlink
        z.writestr(info, "/etc/passwd")
    _, err = _import(study, archive)
    assert "evil.png: a link" in err
    assert not Image.objects.exists()


def _jpeg_with_orientation(orientation: int) -> bytes:
    img = PILImage.new("RGB", (40, 20), (200, 30, 30))
    img.paste((30, 30, 200), (0, 0, 10, 20))  # a blue stripe on the left
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    return buf.getvalue()


def test_exif_orientation_is_applied():
    info = image_inspect(data=_jpeg_with_orientation(6), name="portrait.jpg")
    assert (info.width, info.height) == (20, 40)  # rotated upright
    assert info.format == "JPEG"
    assert any("orientation 6" in n for n in info.normalised)
    stored = PILImage.open(io.BytesIO(info.data))
    assert stored.getexif().get(0x0112, 1) == 1


def test_cmyk_and_16_bit_are_converted_to_8_bit():
    buf = io.BytesIO()
    PILImage.new("CMYK", (8, 8), (0, 255, 255, 0)).save(buf, format="JPEG")
    info = image_inspect(data=buf.getvalue(), name="cmyk.jpg")
    assert PILImage.open(io.BytesIO(info.data)).mode == "RGB"
    assert any("CMYK" in n for n in info.normalised)
    buf = io.BytesIO()
    PILImage.new("I;16", (8, 8), 40000).save(buf, format="PNG")
    info = image_inspect(data=buf.getvalue(), name="deep.png")
    assert PILImage.open(io.BytesIO(info.data)).mode == "L"
    assert any("8-bit" in n for n in info.normalised)


def test_non_srgb_profile_is_converted():
    lab = ImageCms.createProfile("LAB")
    profile = ImageCms.ImageCmsProfile(lab).tobytes()
    buf = io.BytesIO()
    PILImage.new("RGB", (8, 8), (10, 200, 30)).save(
        buf, format="PNG", icc_profile=profile
    )
    info = image_inspect(data=buf.getvalue(), name="wide.png")
    assert any("sRGB" in n for n in info.normalised)
    assert not PILImage.open(io.BytesIO(info.data)).info.get("icc_profile")


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_animations_keep_their_first_frame(fmt):
    frames = [PILImage.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:])
    info = image_inspect(data=buf.getvalue(), name=f"anim.{fmt.lower()}")
    stored = PILImage.open(io.BytesIO(info.data))
    assert not getattr(stored, "is_animated", False)
    assert stored.convert("RGB").getpixel((0, 0))[0] > 200  # the red first frame
    assert any("first frame" in n for n in info.normalised)


def test_plain_images_are_stored_byte_for_byte():
    data = png_bytes(3)
    info = image_inspect(data=data, name="plain.png")
    assert info.data == data and info.normalised == []


def test_import_report_and_provenance_say_what_was_normalised(tmp_path):
    study = StudyFactory()
    (tmp_path / "portrait.jpg").write_bytes(_jpeg_with_orientation(8))
    (tmp_path / "plain.png").write_bytes(png_bytes(9))
    out, _ = _import(study, tmp_path)
    assert "normalised portrait.jpg: EXIF orientation 8 applied" in out
    assert "(1 normalised)" in out
    image = Image.objects.get(provenance__file="portrait.jpg")
    assert image.provenance["normalised"] == ["EXIF orientation 8 applied"]
    assert (image.width, image.height) == (20, 40)


def test_failed_row_leaves_no_file(settings):
    study = StudyFactory()
    with pytest.raises(InvalidInput):
        services.image_create(study=study, data=png_bytes(4), provenance=["x"])
    media = settings.MEDIA_ROOT
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))
