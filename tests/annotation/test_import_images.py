import io
import zipfile

import pytest
from django.core.management import CommandError, call_command
from PIL import Image as PILImage

from annotation.models import Image
from tests.factories import png_bytes

pytestmark = pytest.mark.django_db


def encoded(fmt: str, seed: int) -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", (20, 10), (seed, 40, 90)).save(buf, format=fmt)
    return buf.getvalue()


def test_folder_import_takes_png_jpeg_webp_and_reports_the_rest(
    study, tmp_path, settings
):
    settings.PALATE_MAX_IMAGE_PIXELS = 10_000
    (tmp_path / "a.png").write_bytes(encoded("PNG", 1))
    (tmp_path / "b.jpg").write_bytes(encoded("JPEG", 2))
    (tmp_path / "c.webp").write_bytes(encoded("WEBP", 3))
    (tmp_path / "dup.png").write_bytes(encoded("PNG", 1))
    (tmp_path / "fake.png").write_bytes(b"<html>not an image</html>")
    (tmp_path / "notes.txt").write_text("hello")
    big = io.BytesIO()
    PILImage.new("L", (200, 200)).save(big, format="PNG")  # 40,000 px > limit
    (tmp_path / "huge.png").write_bytes(big.getvalue())
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "import_images",
        study.slug,
        str(tmp_path),
        "--no-progress",
        stdout=out,
        stderr=err,
    )
    assert "Imported 3 image(s)" in out.getvalue()
    assert sorted(Image.objects.values_list("format", flat=True)) == [
        "JPEG",
        "PNG",
        "WEBP",
    ]
    messages = err.getvalue()
    assert "already in study" in messages
    assert "not a readable image" in messages
    assert "over the limit" in messages
    assert "notes.txt" in messages
    image = Image.objects.get(format="JPEG")
    assert (image.width, image.height, image.open_slots) == (20, 10, 3)


def test_zip_import(study, tmp_path):
    path = tmp_path / "images.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(3):
            archive.writestr(f"dir/{i}.png", png_bytes(500 + i))
    call_command(
        "import_images",
        study.slug,
        str(path),
        "--no-progress",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    assert Image.objects.filter(study=study).count() == 3


def test_unknown_study_or_path_is_a_clear_error(study, tmp_path):
    with pytest.raises(CommandError, match="No study"):
        call_command("import_images", "nope", str(tmp_path))
    with pytest.raises(CommandError, match="does not exist"):
        call_command("import_images", study.slug, str(tmp_path / "missing"))
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(CommandError, match="neither a folder nor a zip"):
        call_command("import_images", study.slug, str(tmp_path / "x.txt"))
