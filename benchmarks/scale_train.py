"""Training and predict at scale, for ``benchmarks/scale.py`` (run in a child
process so that its peak RSS is the training's own).

A study of ceil(n / 14) images rated by 14 annotators each (PAMELA's shape),
written in bulk: images and people by ``scale_fill``, synthetic L2-normalised
768-d embeddings straight into the embedding cache (``COPY``; no backbone runs)
and ratings with a planted taste (shared + individual directions, as
``train_speed.py``) through ``COPY`` into a staging table, then one
``INSERT … SELECT`` that gives each its split by ``palate_split``'s rule.
Then the real training run (snapshot, selection, blend, test report, refit,
checkpoint) and ``inference.predict`` for one annotator, warm.
"""

from __future__ import annotations

import io
import os
import resource
import statistics
import time

import numpy as np
import scale_fill

DIM = 768
PER_IMAGE = 14
BACKBONE = f"synthetic:{DIM}"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _copy(cur, table: str, columns: str, rows) -> None:
    buf = io.StringIO()
    for row in rows:
        buf.write("\t".join(row) + "\n")
    buf.seek(0)
    cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN", buf)


def build(n: int, annotators: int, rng) -> tuple:
    from django.db import connection, transaction

    from annotation import services
    from annotation.models import Study

    images = -(-n // PER_IMAGE)
    with transaction.atomic():
        study = services.study_create(
            name=f"Train {n}",
            slug=f"train-{n}",
            status=Study.Status.OPEN,
            raters_per_image=15,
            quota_per_annotator=10**6,
        )
        with connection.cursor() as cur:
            scale_fill.images_insert(
                cur, study_id=study.pk, images=images, count=PER_IMAGE
            )
            scale_fill.people_insert(
                cur, study_id=study.pk, annotators=annotators, prefix=f"t{n}-"
            )
            image_ids, people = _ids(cur, study_id=study.pk, n=n)
            directions = rng.normal(size=(8, DIM)).astype(np.float32)
            feats = np.empty((images, 8), dtype=np.float32)
            for start in range(0, images, 5000):
                emb = rng.normal(size=(min(5000, images - start), DIM))
                emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(
                    np.float32
                )
                feats[start : start + len(emb)] = emb @ directions.T * 10
                ids = image_ids[start : start + len(emb)]
                _copy(
                    cur,
                    "rewardmodel_embedding",
                    "backbone, dim, vector, weights_loaded, created_at, image_id",
                    (
                        (
                            BACKBONE,
                            str(DIM),
                            "\\\\x" + vec.astype(np.float16).tobytes().hex(),
                            "t",
                            "now",
                            str(i),
                        )
                        for i, vec in zip(ids, emb, strict=True)
                    ),
                )
            taste = rng.normal(size=8) + rng.normal(size=(annotators, 8))
            cur.execute(
                "CREATE TEMP TABLE scale_r (image_id bigint, annotator_id bigint, "
                "score smallint) ON COMMIT DROP"
            )
            k = np.arange(PER_IMAGE)
            for start in range(0, images, 20000):
                rows = np.arange(start, min(images, start + 20000))
                who = (rows[:, None] * PER_IMAGE + k[None, :]) % annotators
                raw = np.einsum("ij,ikj->ik", feats[rows], taste[who]) / 3
                raw += 4 + rng.normal(0, 0.5, size=raw.shape)
                score = np.clip(np.rint(raw), 1, 7).astype(int)
                _copy(
                    cur,
                    "scale_r",
                    "image_id, annotator_id, score",
                    (
                        (str(image_ids[r]), str(people[w]), str(s))
                        for r, ws, ss in zip(rows, who, score, strict=True)
                        for w, s in zip(ws, ss, strict=True)
                    ),
                )
            cur.execute(
                f"""
                INSERT INTO annotation_rating (score, time_on_item_ms, is_valid,
                    created_at, annotator_id, image_id, study_id, split)
                SELECT r.score, 3000, true, now(), r.annotator_id, r.image_id, %s,
                       {scale_fill.SPLIT_CASE.format(a="au.u", i="iu.u")}
                  FROM scale_r r
                  JOIN (SELECT id, palate_split_key_unit('image', sha256) u
                          FROM annotation_image WHERE study_id = %s) iu
                    ON iu.id = r.image_id
                  JOIN (SELECT id, palate_split_key_unit('annotator',
                                 source || ':' || external_id) u
                          FROM annotation_annotator) au ON au.id = r.annotator_id
                """,
                [study.pk, study.pk],
            )
    with connection.cursor() as cur:
        for table in ("annotation_rating", "annotation_image", "rewardmodel_embedding"):
            cur.execute(f"VACUUM ANALYZE {table}")
    return study, image_ids, people


def kept(n: int):
    """The study, image ids and people a ``--keep-db`` run built for ``n``
    ratings (None if there is none)."""
    from django.db import connection

    from annotation.models import Study

    study = Study.objects.filter(slug=f"train-{n}").first()
    if study is None:
        return None
    with connection.cursor() as cur:
        image_ids, people = _ids(cur, study_id=study.pk, n=n)
    return study, image_ids, people


def _ids(cur, *, study_id: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The study's image ids and its simulated people's (``t{n}-`` users)."""
    cur.execute(
        "SELECT id FROM annotation_image WHERE study_id = %s ORDER BY id", [study_id]
    )
    image_ids = np.array([r[0] for r in cur.fetchall()], dtype=np.int64)
    cur.execute(
        "SELECT a.id FROM annotation_annotator a JOIN auth_user u "
        "ON u.id = a.user_id WHERE u.username LIKE %s ORDER BY a.id",
        [f"t{n}-%"],
    )
    return image_ids, np.array([r[0] for r in cur.fetchall()], dtype=np.int64)


def run(n: int, annotators: int, *, reuse: bool = False) -> dict:
    """Build (or with ``reuse``, find the kept) study, train on it, predict."""
    from annotation.models import Annotator
    from rewardmodel import inference, services

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    found = kept(n) if reuse else None
    study, image_ids, people = found or build(n, annotators, rng)
    setup_s = time.perf_counter() - t0
    rss_before = _rss_mb()
    run = services.training_run_create(
        study=study, config={"backbone": BACKBONE, "seed": 0}
    )
    t1, c1 = time.perf_counter(), time.process_time()
    run = services.training_run_execute(run_id=run.pk)
    train_s, train_cpu = time.perf_counter() - t1, time.process_time() - c1
    out = {
        "train_ratings": n,
        "train_images": len(image_ids),
        "setup_s": setup_s,
        "train_status": run.status,
        "train_s": train_s,
        "train_cpu_s": train_cpu,
        "train_rss_before_mb": rss_before,
        "train_rss_mb": _rss_mb(),
        "load_during": os.getloadavg()[0],
    }
    if run.status != "succeeded":
        out["train_error"] = (run.error or "")[-800:]
        return out
    who = Annotator.objects.get(pk=int(people[0]))
    for label, ids in (("5000", image_ids[:5000]), ("all", image_ids)):
        ids = [int(i) for i in ids]
        t = time.perf_counter()
        inference.predict(annotator=who, image_ids=ids)
        cold = time.perf_counter() - t
        warm = []
        for _ in range(30 if label == "5000" else 10):
            t = time.perf_counter()
            inference.predict(annotator=who, image_ids=ids)
            warm.append((time.perf_counter() - t) * 1000)
        out[f"predict_{label}_cold_ms"] = cold * 1000
        out[f"predict_{label}_p50_ms"] = statistics.median(warm)
    out["predict_p50_ms"] = out["predict_5000_p50_ms"]
    out["rss_after_predict_mb"] = _rss_mb()
    return out
