import json

import pytest
from django.core.management import CommandError, call_command

from rewardmodel import services
from rewardmodel.data import snapshot_take
from rewardmodel.models import ExternalItem, ExternalScore, ExternalSource
from tests.factories import png_bytes

pytestmark = pytest.mark.django_db


def test_population_csv_with_image_files_and_per_user_jsonl(rated_study, tmp_path):
    study, _ = rated_study
    for i in range(6):
        (tmp_path / f"ext{i}.png").write_bytes(png_bytes(31_000 + i, size=(24, 24)))
    csv_path = tmp_path / "ava_like.csv"
    csv_path.write_text(
        "path,score,n\n"
        + "".join(f"ext{i}.png,{2 + i * 1.1:.1f},200\n" for i in range(6))
    )
    call_command(
        "import_ratings",
        study.slug,
        str(csv_path),
        "--format",
        "csv",
        "--scale-min",
        "1",
        "--scale-max",
        "10",
    )
    source = ExternalSource.objects.get(name="ava-like")
    assert source.kind == "population" and source.scale_max == 10
    assert ExternalItem.objects.filter(source=source).count() == 6

    image = study.images.first()
    jsonl = tmp_path / "prior_study.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"image": image.pk, "user": "u1", "score": 3},
                {"sha256": image.sha256, "user": "u2", "score": 5},
            ]
        )
    )
    call_command("import_ratings", study.slug, str(jsonl), "--format", "jsonl")
    per_user = ExternalSource.objects.get(name="prior-study")
    assert per_user.kind == "per_user"
    assert ExternalScore.objects.filter(item__source=per_user).count() == 2
    # Re-import is idempotent.
    call_command("import_ratings", study.slug, str(jsonl), "--format", "jsonl")
    assert ExternalScore.objects.filter(item__source=per_user).count() == 2

    snap = snapshot_take(study_id=study.pk)
    assert snap.counts["external_population_scores"] == 6
    assert snap.counts["external_raters"] == 2

    run = services.training_run_create(study=study, config={"steps": 20})
    run = services.training_run_execute(run_id=run.pk)
    assert run.status == "succeeded", run.error
    assert run.version.data_counts["external_population_scores"] == 6


def test_bad_rows_are_refused(rated_study, tmp_path):
    study, _ = rated_study
    bad = tmp_path / "bad.csv"
    bad.write_text("path,score\nmissing.png,3\nmissing2.png,5\n")
    with pytest.raises(CommandError, match="not found"):
        call_command("import_ratings", study.slug, str(bad), "--format", "csv")
    bad.write_text("image,score\n999999,3\n999998,4\n")
    with pytest.raises(CommandError, match="not in study"):
        call_command("import_ratings", study.slug, str(bad), "--format", "csv")
    assert not ExternalSource.objects.exists()


def test_train_command_prints_metrics(rated_study, capsys):
    study, _ = rated_study
    call_command(
        "train_reward_model",
        "--study",
        study.slug,
        "--steps",
        "20",
        "--promote",
        "never",
    )
    out = capsys.readouterr().out
    assert "succeeded" in out and "pairwise accuracy" in out
    assert "unseen k=20" in out and "WARNING" in out and "not promoted" in out


def test_parquet_population_scores_of_study_images(rated_study, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    study, _ = rated_study
    ids = list(study.images.values_list("pk", flat=True)[:4])
    path = tmp_path / "aesthetic.parquet"
    pq.write_table(pa.table({"image": ids, "score": [1.5, 3.0, 4.5, 6.0]}), path)
    call_command(
        "import_ratings",
        str(study.pk),
        str(path),
        "--format",
        "parquet",
        "--scale-min",
        "1",
        "--scale-max",
        "10",
        "--source",
        "aes",
    )
    source = ExternalSource.objects.get(name="aes")
    items = ExternalItem.objects.filter(source=source)
    assert sorted(items.values_list("image_id", flat=True)) == sorted(ids)
    assert not items.exclude(path="").exists()
