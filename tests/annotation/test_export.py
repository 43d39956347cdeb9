"""Dataset export: the Hugging Face layout loads with pyarrow and `datasets`,
images decode, exports are deterministic, pseudonymous, consent-aware, and
refused cleanly (nothing written) when there is nothing or something missing."""

import hashlib
import io
import json
import os
from pathlib import Path

# `datasets` reads these once, when first imported: no network, ever, in tests.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow.parquet as pq
import pytest
import yaml
from django.core.management import CommandError, call_command
from django.db.models import F
from PIL import Image as PILImage

from annotation import services
from annotation.datasets.services.export import SPLITS, ExportOptions, dataset_export
from annotation.models import Annotator, Image, Participation, Rating
from core.exceptions import InvalidInput
from tests.annotation.export_fixtures import rated_study
from tests.factories import AnnotatorFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _hf_offline(monkeypatch, tmp_path):
    """`datasets` must never reach the network and must cache in tmp."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def files_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def read_parquet(root: Path, config: str) -> list[dict]:
    rows = []
    for path in sorted((root / config / "data").glob("*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


def test_parquet_layout_opens_with_pyarrow(tmp_path):
    study = rated_study()
    report = dataset_export(study=study, out=tmp_path / "ds")
    root = tmp_path / "ds"
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert "README.md" in names
    assert "images/data/train-00000-of-00001.parquet" in names
    assert "annotators/data/train-00000-of-00001.parquet" in names
    rating_files = [n for n in names if n.startswith("ratings/data/")]
    assert rating_files and all(
        Path(n).name.split("-")[0] in SPLITS and n.endswith("-of-00001.parquet")
        for n in rating_files
    )
    ratings = read_parquet(root, "ratings")
    assert len(ratings) == Rating.objects.filter(study=study).count() == 18
    assert report["ratings"] == 18 and report["images"] == 6
    assert sum(report["splits"].values()) == 18
    by_pair = {(r.image_id, r.annotator.public_id): r for r in Rating.objects.all()}
    for row in ratings:
        rating = by_pair[(row["image_id"], row["annotator_id"])]
        assert row["score"] == rating.score
        assert row["created_at"] == rating.created_at
        assert row["time_on_item_ms"] == rating.time_on_item_ms
        assert row["is_valid"] is True
        assert row["split"] == rating.split  # the stored assignment
    images = read_parquet(root, "images")
    assert [r["image_id"] for r in images] == sorted(
        Image.objects.filter(study=study).values_list("pk", flat=True)
    )
    for row in images:
        image = Image.objects.get(pk=row["image_id"])
        assert row["image"]["bytes"] == image.file.open("rb").read()
        assert hashlib.sha256(row["image"]["bytes"]).hexdigest() == row["sha256"]
        assert (row["backend"], row["model"], row["seed"]) == (
            "procedural",
            "shapes-v1",
            image.provenance["seed"],
        )
        assert json.loads(row["provenance"]) == image.provenance
        assert (row["width"], row["height"], row["n_ratings"]) == (16, 16, 3)


def test_datasets_loads_every_config_and_decodes_images(tmp_path):
    import datasets

    study = rated_study()
    dataset_export(study=study, out=tmp_path / "ds")
    root = tmp_path / "ds"
    cache = str(tmp_path / "cache")
    images = datasets.load_dataset(
        "parquet",
        data_files={"train": str(root / "images/data/train-*.parquet")},
        cache_dir=cache,
    )["train"]
    assert isinstance(images.features["image"], datasets.Image)
    first = images[0]["image"]
    assert isinstance(first, PILImage.Image) and first.size == (16, 16)
    stored = Image.objects.get(pk=images[0]["image_id"])
    original = PILImage.open(stored.file.open("rb"))
    assert first.convert("RGB").tobytes() == original.convert("RGB").tobytes()
    # The folder itself, through the card's configs: every split with rows.
    ratings = datasets.load_dataset(str(root), "ratings", cache_dir=cache)
    assert sum(len(ratings[s]) for s in ratings) == 18
    assert set(ratings) <= set(SPLITS)
    for split in ratings:
        assert set(ratings[split]["split"]) == {split}
    annotators = datasets.load_dataset(str(root), "annotators", cache_dir=cache)
    assert len(annotators["train"]) == 3


def test_card_front_matter_and_prose(tmp_path):
    import krippendorff
    import numpy as np

    study = rated_study()
    report = dataset_export(
        study=study, out=tmp_path / "ds", options=ExportOptions(license="cc-by-4.0")
    )
    text = (tmp_path / "ds/README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "cc-by-4.0"
    configs = {c["config_name"]: c for c in meta["configs"]}
    assert set(configs) == {"ratings", "images", "annotators"}
    assert configs["ratings"]["default"] is True
    info = {i["config_name"]: i for i in meta["dataset_info"]}
    features = {f["name"]: f["dtype"] for f in info["images"]["features"]}
    assert features["image"] == "image" and features["seed"] == "int64"
    split_rows = {s["name"]: s["num_examples"] for s in info["ratings"]["splits"]}
    assert split_rows == {s: n for s, n in report["splits"].items() if n}
    # Agreement: the same alpha as krippendorff on the raw reliability matrix.
    table = read_parquet(tmp_path / "ds", "ratings")
    raters = sorted({r["annotator_id"] for r in table})
    units = sorted({r["image_id"] for r in table})
    matrix = np.full((len(raters), len(units)), np.nan)
    for r in table:
        matrix[raters.index(r["annotator_id"]), units.index(r["image_id"])] = r["score"]
    expected = krippendorff.alpha(
        reliability_data=matrix, level_of_measurement="interval"
    )
    assert report["alpha_interval"] == pytest.approx(expected, abs=1e-4)
    assert f"{report['alpha_interval']}" in text
    assert "| ratings | 18 |" in text and "| annotators | 3 |" in text
    assert "How it was collected" in text and study.name in text


def test_card_gives_agreement_per_domain(tmp_path):
    import krippendorff
    import numpy as np

    study = rated_study(n_images=8, n_annotators=5)
    photos = list(Image.objects.filter(study=study).order_by("pk")[:4])
    Image.objects.filter(pk__in=[i.pk for i in photos]).update(domain="photo")
    report = dataset_export(study=study, out=tmp_path / "ds")
    table = read_parquet(tmp_path / "ds", "ratings")
    domain = {i.pk: i.domain for i in Image.objects.filter(study=study)}

    def alpha_of(rows):
        raters = sorted({r["annotator_id"] for r in rows})
        units = sorted({r["image_id"] for r in rows})
        m = np.full((len(raters), len(units)), np.nan)
        for r in rows:
            m[raters.index(r["annotator_id"]), units.index(r["image_id"])] = r["score"]
        return krippendorff.alpha(
            reliability_data=m,
            level_of_measurement="interval",
            value_domain=list(range(1, 8)),
        )

    by_domain = report["alpha_by_domain"]
    assert set(by_domain) == {"art", "photo"}
    for name in ("art", "photo"):
        rows = [r for r in table if domain[r["image_id"]] == name]
        assert by_domain[name]["images"] == 4
        assert by_domain[name]["alpha"] == pytest.approx(alpha_of(rows), abs=1e-4)
    text = (tmp_path / "ds/README.md").read_text()
    assert f"| agreement, photo | alpha = {by_domain['photo']['alpha']}" in text


def test_splits_are_the_stored_ones_never_recomputed(tmp_path):
    study = rated_study()
    moved = Rating.objects.order_by("pk").first()
    other = next(s for s in SPLITS if s != moved.split)
    Rating.objects.filter(pk=moved.pk).update(split=other)
    report = dataset_export(study=study, out=tmp_path / "ds")
    rows = read_parquet(tmp_path / "ds", "ratings")
    got = {(r["image_id"], r["annotator_id"]): r["split"] for r in rows}
    assert got[(moved.image_id, moved.annotator.public_id)] == other
    stored = {s: Rating.objects.filter(study=study, split=s).count() for s in SPLITS}
    assert report["splits"] == stored
    for split in SPLITS:
        files = list((tmp_path / "ds/ratings/data").glob(f"{split}-*.parquet"))
        assert bool(files) == bool(stored[split])


def test_same_study_exports_byte_identical_files(tmp_path):
    study = rated_study()
    dataset_export(study=study, out=tmp_path / "one")
    dataset_export(study=study, out=tmp_path / "two")
    one, two = files_digest(tmp_path / "one"), files_digest(tmp_path / "two")
    assert one == two and len(one) >= 4


def test_no_names_emails_or_pids_in_any_file(tmp_path, staff_user):
    study = rated_study()
    for a in Annotator.objects.all():
        a.user.email = f"{a.user.username}@mail.example"
        a.user.first_name = "Ottilie"
        a.user.save()
    pids = list(Annotator.objects.values_list("external_id", flat=True))
    secrets = [
        *pids,
        *(a.user.email for a in Annotator.objects.all()),
        "Ottilie",
        "@mail.example",
        staff_user.username + "@",
        "PID0",
    ]
    for fmt, images in (("parquet", "embed"), ("jsonl", "path"), ("csv", "path")):
        out = tmp_path / fmt
        dataset_export(
            study=study, out=out, options=ExportOptions(fmt=fmt, images=images)
        )
        for path in out.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for secret in secrets:
                    assert secret.encode() not in data, (secret, path)
        ids = {
            r["annotator_id"]
            for r in (
                read_parquet(out, "ratings")
                if fmt == "parquet"
                else [
                    json.loads(line)
                    for p in (out / "ratings/data").glob("*.jsonl")
                    for line in p.read_text().splitlines()
                ]
                if fmt == "jsonl"
                else []
            )
        }
        assert all(i.startswith("a-") and len(i) == 14 for i in ids)


def test_demographics_only_asked_fields_and_only_with_consent(tmp_path):
    study = rated_study(n_annotators=3)
    first, second, third = Annotator.objects.order_by("pk")[:3]
    # Answered a field this study did not ask (elsewhere): never exported.
    first.demographics = {**first.demographics, "gender": "female"}
    first.save()
    # Consent withdrawn / never given in this study: no demographics at all.
    Participation.objects.filter(annotator=second, study=study).update(
        consented_at=None
    )
    dataset_export(study=study, out=tmp_path / "ds")
    rows = {r["annotator_id"]: r for r in read_parquet(tmp_path / "ds", "annotators")}
    assert set(rows[first.public_id]) == {
        "annotator_id",
        "n_ratings",
        "excluded",
        "age_range",
        "country",
    }
    assert rows[first.public_id]["age_range"] == first.demographics["age_range"]
    assert rows[second.public_id]["age_range"] is None
    assert rows[second.public_id]["country"] is None
    assert rows[third.public_id]["country"] == "DE"
    for path in (tmp_path / "ds").rglob("*.parquet"):
        assert b"female" not in path.read_bytes()


@pytest.mark.parametrize("scope", ["everywhere", "this study"])
def test_excluded_annotators_left_out_unless_asked(tmp_path, scope):
    study = rated_study()
    excluded = Rating.objects.order_by("pk").first().annotator
    if scope == "everywhere":
        services.annotator_set_status(annotator=excluded, status="excluded")
    else:  # excluded from this study's page only: still "excluded" here
        services.participation_exclude(annotator=excluded, study=study)
    n_theirs = Rating.objects.filter(annotator=excluded).count()
    report = dataset_export(study=study, out=tmp_path / "default")
    ids = {r["annotator_id"] for r in read_parquet(tmp_path / "default", "ratings")}
    assert excluded.public_id not in ids and report["ratings"] == 18 - n_theirs
    annotators = read_parquet(tmp_path / "default", "annotators")
    assert excluded.public_id not in {a["annotator_id"] for a in annotators}

    report = dataset_export(
        study=study,
        out=tmp_path / "kept",
        options=ExportOptions(include_excluded=True),
    )
    rows = read_parquet(tmp_path / "kept", "ratings")
    assert report["ratings"] == 18
    theirs = [r for r in rows if r["annotator_id"] == excluded.public_id]
    assert len(theirs) == n_theirs and not any(r["is_valid"] for r in theirs)
    flags = {
        a["annotator_id"]: a["excluded"]
        for a in read_parquet(tmp_path / "kept", "annotators")
    }
    assert flags[excluded.public_id] is True and sum(flags.values()) == 1


def test_erased_annotators_are_never_exported(tmp_path):
    study = rated_study()
    erased = Rating.objects.order_by("pk").first().annotator
    services.annotator_erase(annotator_id=erased.pk, reason="asked")
    n_theirs = Rating.objects.filter(annotator=erased).count()
    report = dataset_export(
        study=study,
        out=tmp_path / "ds",
        options=ExportOptions(include_excluded=True, include_invalid=True),
    )
    assert report["ratings"] == 18 - n_theirs
    for path in (tmp_path / "ds").rglob("*"):
        if path.is_file():
            assert erased.public_id.encode() not in path.read_bytes()


def test_invalid_ratings_left_out_unless_asked(tmp_path):
    study = rated_study()
    bad = Rating.objects.order_by("pk").first()
    Rating.objects.filter(pk=bad.pk).update(is_valid=False)
    # (its slot reopens, as the engine does when it invalidates a rating)
    Image.objects.filter(pk=bad.image_id).update(rating_count=F("rating_count") - 1)
    assert dataset_export(study=study, out=tmp_path / "a")["ratings"] == 17
    report = dataset_export(
        study=study, out=tmp_path / "b", options=ExportOptions(include_invalid=True)
    )
    assert report["ratings"] == 18


def test_study_without_ratings_is_refused_and_nothing_written(tmp_path):
    study = rated_study(slug="empty-one", n_annotators=0)
    with pytest.raises(InvalidInput, match="has no ratings to export"):
        dataset_export(study=study, out=tmp_path / "out" / "ds")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_missing_image_file_is_refused_and_nothing_written(tmp_path):
    study = rated_study()
    image = Image.objects.filter(study=study).order_by("pk")[2]
    image.file.storage.delete(image.file.name)
    with pytest.raises(InvalidInput, match=rf"1 image file.*#{image.pk}"):
        dataset_export(study=study, out=tmp_path / "out" / "ds")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    # Without images the same study exports.
    report = dataset_export(
        study=study, out=tmp_path / "meta", options=ExportOptions(images="none")
    )
    assert report["images"] == 6
    assert "image" not in read_parquet(tmp_path / "meta", "images")[0]


def test_failure_midway_leaves_no_half_written_dataset(tmp_path, monkeypatch):
    from annotation.datasets.services import export as export_module

    study = rated_study()
    out = tmp_path / "out"
    dataset_export(study=study, out=out / "ds")
    before = files_digest(out / "ds")

    def boom(**kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_module.export_card, "card_render", boom)
    with pytest.raises(RuntimeError):
        dataset_export(study=study, out=out / "ds", overwrite=True)
    assert files_digest(out / "ds") == before  # the old export untouched
    assert sorted(p.name for p in out.iterdir()) == ["ds"]  # no temp left


def test_existing_target_needs_overwrite(tmp_path):
    study = rated_study()
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="already exists"):
        dataset_export(study=study, out=tmp_path / "ds")
    assert (tmp_path / "ds" / "notes.txt").read_text() == "mine"
    dataset_export(study=study, out=tmp_path / "ds", overwrite=True)
    assert not (tmp_path / "ds" / "notes.txt").exists()
    assert (tmp_path / "ds" / "README.md").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "media") == ["ds"]


def test_shards_are_numbered_and_load_together(tmp_path):
    import datasets

    study = rated_study(n_images=12, n_annotators=6)
    options = ExportOptions(
        shard_rows=5, group_rows=2, image_group_rows=2, shard_bytes=1
    )
    report = dataset_export(study=study, out=tmp_path / "ds", options=options)
    train = sorted((tmp_path / "ds/ratings/data").glob("train-*.parquet"))
    n = len(train)
    assert n >= 2 and [p.name for p in train] == [
        f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)
    ]
    # shard_bytes=1: every images row group starts a new shard.
    image_shards = sorted((tmp_path / "ds/images/data").glob("*.parquet"))
    assert len(image_shards) == 6
    assert pq.ParquetFile(image_shards[0]).metadata.num_row_groups == 1
    loaded = datasets.load_dataset(
        str(tmp_path / "ds"), "ratings", cache_dir=str(tmp_path / "c")
    )
    assert sum(len(loaded[s]) for s in loaded) == report["ratings"]
    images = datasets.load_dataset(
        str(tmp_path / "ds"), "images", cache_dir=str(tmp_path / "c")
    )
    assert len(images["train"]) == 12


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_text_formats_carry_the_same_tables(tmp_path, fmt):
    import datasets

    study = rated_study()
    dataset_export(study=study, out=tmp_path / "pq")
    dataset_export(
        study=study, out=tmp_path / fmt, options=ExportOptions(fmt=fmt, images="path")
    )
    cache = str(tmp_path / "c")
    for config in ("ratings", "images", "annotators"):
        text = datasets.load_dataset(str(tmp_path / fmt), config, cache_dir=cache)
        rows = sorted(
            (r for s in text for r in text[s]), key=lambda r: json.dumps(r, default=str)
        )
        ref = sorted(
            read_parquet(tmp_path / "pq", config),
            key=lambda r: json.dumps(r, default=str),
        )
        assert len(rows) == len(ref)
        keys = ["image_id", "annotator_id", "score", "split", "sha256", "n_ratings"]
        for got, want in zip(rows, ref, strict=True):
            for key in keys:
                if key in want:
                    assert str(got[key]) == str(want[key]), (config, key)
    # Image files beside the tables, named by path and byte-equal.
    for image in Image.objects.filter(study=study):
        ext = image.file.name.rsplit(".", 1)[-1]
        copied = (
            tmp_path / fmt / f"images/files/{image.sha256[:2]}/{image.sha256}.{ext}"
        )
        assert copied.read_bytes() == image.file.open("rb").read()


def test_parquet_path_variant_decodes_from_the_dataset_root(tmp_path, monkeypatch):
    import datasets

    study = rated_study()
    dataset_export(
        study=study, out=tmp_path / "ds", options=ExportOptions(images="path")
    )
    rows = read_parquet(tmp_path / "ds", "images")
    assert all(r["image"]["bytes"] is None for r in rows)
    monkeypatch.chdir(tmp_path / "ds")
    images = datasets.load_dataset(
        "parquet",
        data_files={"train": "images/data/train-*.parquet"},
        cache_dir=str(tmp_path / "c"),
    )["train"]
    decoded = images[0]["image"]
    assert isinstance(decoded, PILImage.Image) and decoded.size == (16, 16)


def test_embedding_in_text_formats_is_refused():
    with pytest.raises(InvalidInput, match="only be embedded in Parquet"):
        ExportOptions(fmt="csv", images="embed").validate()


def test_command_writes_and_reports(tmp_path, capsys):
    study = rated_study()
    call_command("export_dataset", study.slug, str(tmp_path / "ds"), "--no-progress")
    out = json.loads(capsys.readouterr().out)
    assert out["ratings"] == 18 and out["images"] == 6 and out["annotators"] == 3
    assert (tmp_path / "ds/README.md").is_file()
    with pytest.raises(CommandError, match="already exists"):
        call_command("export_dataset", study.slug, str(tmp_path / "ds"))
    with pytest.raises(CommandError, match="No study"):
        call_command("export_dataset", "nope", str(tmp_path / "x"))
    with pytest.raises(CommandError, match="only be embedded"):
        call_command(
            "export_dataset",
            str(study.pk),
            str(tmp_path / "y"),
            "--format",
            "csv",
            "--images",
            "embed",
        )
    assert not (tmp_path / "y").exists()


def test_command_progress_bar(tmp_path):
    study = rated_study()
    err = io.StringIO()
    call_command(
        "export_dataset",
        study.slug,
        str(tmp_path / "ds"),
        stdout=io.StringIO(),
        stderr=err,
    )
    bar = err.getvalue()
    assert "100%" in bar and "27/27" in bar  # 18 ratings, 6 images, 3 annotators


def test_annotator_without_ratings_in_study_is_not_listed(tmp_path):
    study = rated_study()
    idle = AnnotatorFactory()
    services.participation_consent(
        annotator=idle, study=study, token=study.invite_token
    )
    dataset_export(study=study, out=tmp_path / "ds")
    ids = {a["annotator_id"] for a in read_parquet(tmp_path / "ds", "annotators")}
    assert idle.public_id not in ids
