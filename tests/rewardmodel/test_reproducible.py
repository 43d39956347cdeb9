"""The same ratings give the same splits, selection, metrics and model in any
database and after any re-import (issue 26): every split and every ordering the
training uses comes from keys the data carries (image sha256, the rater's
external id), never from database ids or insertion order."""

import csv
import io

import numpy as np
import pytest
from django.core.management import call_command

from annotation import services as ann
from annotation.models import Annotator, Rating
from rewardmodel import services as rm
from rewardmodel.checkpoint import checkpoint_load
from tests.factories import StudyFactory, make_images, png_bytes

pytestmark = pytest.mark.django_db


def _dataset(folder, *, n_images=60, n_raters=60, per_image=14, seed=3):
    """A table of ratings without published splits: images as files."""
    rng = np.random.default_rng(seed)
    colour = rng.normal(size=(n_images, 3))
    taste = 0.5 * rng.normal(size=3) + rng.normal(size=(n_raters, 3))
    rows = []
    for i in range(n_images):
        (folder / f"img{i:03d}.png").write_bytes(png_bytes(80_000 + i, size=(24, 24)))
        for r in rng.choice(n_raters, per_image, replace=False):
            score = int(np.clip(np.rint(5.5 + 2 * colour[i] @ taste[r]), 1, 10))
            rows.append(
                {
                    "participant_id": f"P{r:03d}",
                    "rating": score,
                    "image": f"img{i:03d}.png",
                }
            )
    return rows


def _write(path, rows):
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _import_and_train(slug, path):
    call_command(
        "import_ratings",
        slug,
        str(path),
        "--dataset",
        "repro",
        "--create",
        "--scale-min",
        "1",
        "--scale-max",
        "10",
        stdout=io.StringIO(),
    )
    from annotation.models import Study

    study = Study.objects.get(slug=slug)
    run = rm.training_run_execute(
        run_id=rm.training_run_create(study=study, promote="always").pk
    )
    assert run.status == "succeeded", run.error
    version = run.version
    splits = {
        (r.image.sha256, r.annotator.external_id.removeprefix("old-")): r.split
        for r in Rating.objects.filter(study=study).select_related("image", "annotator")
    }
    per_annotator = sorted(
        (
            m.annotator.external_id.removeprefix("old-"),
            m.split,
            m.k,
            m.n_test,
            m.pairwise_accuracy,
            m.spearman,
            m.mae,
            m.mae_ci_low,
            m.baselines,
        )
        for m in version.annotator_metrics.select_related("annotator")
    )
    model, keys, _ = checkpoint_load(version.checkpoint_path)
    names = dict(Annotator.objects.values_list("pk", "external_id"))
    return {
        "splits": splits,
        "metrics": version.metrics,
        "primary": version.primary_metric,
        "per_annotator": per_annotator,
        "heads": model.heads,
        "w0": model.w0,
        "keys": [names[int(k)] for k in keys],
    }


def test_same_ratings_same_model_under_other_ids_and_row_order(tmp_path, rm_settings):
    rows = _dataset(tmp_path)
    _write(tmp_path / "a.csv", rows)
    first = _import_and_train("repro-a", tmp_path / "a.csv")
    # Another "database": the first import's raters are renamed away (the second
    # import creates its own), filler rows move every id sequence, and the rows
    # arrive in another order.
    for a in Annotator.objects.filter(source="import"):
        a.external_id = "old-" + a.external_id
        a.save(update_fields=["external_id"])
    make_images(StudyFactory(), 7)
    for _ in range(11):
        ann.annotator_create()
    shuffled = [rows[i] for i in np.random.default_rng(9).permutation(len(rows))]
    _write(tmp_path / "b.csv", shuffled)
    second = _import_and_train("repro-b", tmp_path / "b.csv")

    assert first["splits"] == second["splits"]
    assert len(set(first["splits"].values())) == 5
    assert first["metrics"] == second["metrics"]
    assert first["primary"] == second["primary"]
    assert first["per_annotator"] == second["per_annotator"]
    assert [k.removeprefix("old-") for k in first["keys"]] == second["keys"]
    assert np.array_equal(first["heads"], second["heads"])
    assert np.array_equal(first["w0"], second["w0"])
