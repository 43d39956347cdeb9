"""Server time of the taste portrait page for an annotator with many ratings in
a large study (issue 28's target: at most 100 ms for 500 ratings in a
5,000-image study).

In-process through Django's test client (middleware, session, auth, every
query, the model's prediction of every unrated image through
``rewardmodel.inference.predict`` and the template; no network or WSGI
server), on a throwaway PostgreSQL database next to DATABASE_URL's:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/palate_bench \\
        .venv/bin/python benchmarks/portrait.py [--images 5000] [--ratings 500]

The study: ``--images`` images, each rated by ``--raters`` of ``--annotators``
imported raters with seeded tastes, on planted ``--dim``-dimensional
embeddings (written to the cache: embedding images is not what is timed; 512 is
the CPU default backbone's width); one version trained and promoted. Then one
participant, not in that version (the live newcomer path), with ``--ratings``
ratings. Timed:

* ``cold``: the first render in the process (checkpoint, embeddings of every
  image and the crowd loaded);
* ``warm``: renders with nothing new (the participant's adapted head cached);
* ``after a rating``: the participant rates one more image through the engine
  before each render, so their head and its spread take that rating in (what
  the portrait costs right after the last rating);
* ``crowd rebuild``: a render that also rebuilds the crowd sums (each web
  process does it once a minute), and with them the participant's posterior
  from all their ratings.

Then the update a new rating costs the live newcomer path (``_update_cost``):
``served`` (``Predictor.head`` right after the rating: the query of their
ratings, the fold, the head), ``fold`` (folding one rating into the posterior
and reading the head, ``posterior.LivePosterior``) and ``from scratch`` (the
closed form from all their ratings, ``Model.adapt`` and ``Model.spread``: two
decompositions of their n × n kernel, what serving did before).

Prints p50/p95/max in ms, the CPU time, the queries and the machine's load
average before and after.
"""

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import setup_django  # noqa: E402


def _args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--ratings", type=int, default=500, help="the participant's")
    p.add_argument("--annotators", type=int, default=60, help="imported raters")
    p.add_argument("--raters", type=int, default=3, help="raters per image")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--repeat", type=int, default=30, help="renders per kind")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def _study(args, rng):
    """Images, imported ratings, planted embeddings; returns (study, backbone)."""
    import numpy as np
    from django.db.models import F

    from annotation.datasets.services import RatingRecord, ratings_import
    from annotation.studies.models import Image
    from rewardmodel.embeddings import to_blob
    from rewardmodel.models import Embedding
    from tests.factories import StudyFactory, png_bytes

    emb = rng.normal(size=(args.images, args.dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    taste = 0.6 * rng.normal(size=args.dim) + rng.normal(
        size=(args.annotators, args.dim)
    )
    study = StudyFactory(
        slug="portrait-bench",
        raters_per_image=args.raters,
        quota_per_annotator=args.ratings + 2 * args.repeat + 10,
    )
    pngs = [png_bytes(1_000_000 + i, size=(8, 8)) for i in range(args.images)]

    def records():
        for i in range(args.images):
            for a in rng.choice(args.annotators, args.raters, replace=False):
                u = 4 + 1.2 * (4.0 * emb[i] @ taste[a] + rng.normal(0, 0.5))
                yield RatingRecord(
                    rater=f"r{a}",
                    score=int(np.clip(np.rint(u), 1, 7)),
                    image_key=f"i{i}",
                    image_bytes=pngs[i],
                )

    ratings_import(study=study, records=records(), dataset="portrait-bench")
    row = {hashlib.sha256(b).hexdigest(): i for i, b in enumerate(pngs)}
    backbone = f"planted:{args.dim}"
    Embedding.objects.bulk_create(
        (
            Embedding(
                image_id=pk,
                backbone=backbone,
                dim=args.dim,
                vector=to_blob(emb[row[sha]]),
                weights_loaded=True,
            )
            for pk, sha in Image.objects.filter(study=study).values_list("pk", "sha256")
        ),
        batch_size=1000,
    )
    Image.objects.filter(study=study).update(target_ratings=F("target_ratings") + 1)
    return study, backbone


def _participant(study, n: int, rng):
    """A browser participant (consented, started) with ``n`` engine ratings."""
    from django.test import Client

    from annotation import services as ann

    person = ann.annotator_create()
    ann.participation_consent(annotator=person, study=study, token=study.invite_token)
    for _ in range(n):
        _rate_one(person, study, rng)
    client = Client()
    client.force_login(person.user)
    session = client.session
    session["palate_studies"] = [study.pk]
    session.save()
    return person, client


def _rate_one(person, study, rng):
    from annotation import services as ann

    lease = ann.assignment_claim(annotator=person, study=study)[0]
    ann.rating_submit(
        assignment_id=lease.pk, annotator=person, score=int(rng.integers(1, 8))
    )


def _render(client, url):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as q:
        t0, c0 = time.perf_counter(), time.process_time()
        r = client.get(url)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert r.status_code == 200, r.status_code
    assert b'id="portrait-predicted"' in r.content
    return wall * 1000, cpu * 1000, len(q.captured_queries)


def _line(name, runs):
    wall = sorted(r[0] for r in runs)
    p95 = wall[min(len(wall) - 1, round(0.95 * (len(wall) - 1)))]
    print(
        f"{name:>16}: n={len(wall):3d}  p50 {statistics.median(wall):7.1f} ms  "
        f"p95 {p95:7.1f} ms  max {wall[-1]:7.1f} ms  "
        f"cpu p50 {statistics.median(r[1] for r in runs):6.1f} ms  "
        f"queries {max(r[2] for r in runs)}"
    )


def _measure(args, study, person, client, rng):
    from django.urls import reverse

    from rewardmodel import inference

    url = reverse("portrait:page", args=[study.slug])
    _line("cold", [_render(client, url)])
    _line("warm", [_render(client, url) for _ in range(args.repeat)])
    after = []
    for _ in range(args.repeat):
        _rate_one(person, study, rng)
        after.append(_render(client, url))
    _line("after a rating", after)
    rebuild = []
    for _ in range(max(3, args.repeat // 5)):
        for pred in list(inference._LOADED.values()):
            pred.crowd = None  # as when CROWD_TTL has passed
        rebuild.append(_render(client, url))
    _line("crowd rebuild", rebuild)


def _timed(fn):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as q:
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall * 1000, cpu * 1000, len(q.captured_queries)


def _update_cost(args, study, person, rng):
    """What a new rating costs the live newcomer path, after each of
    ``--repeat`` more ratings: ``served`` (``Predictor.head`` right after it:
    the one query of their ratings, the fold, the head), ``fold`` (the fold and
    the head alone, into a copy of the state before the rating) and
    ``from scratch`` (the closed form from all their ratings: ``Model.adapt`` and
    ``Model.spread``, two decompositions of their kernel, as served before)."""
    import copy

    import numpy as np

    from rewardmodel import inference
    from rewardmodel import taste as T

    pred = next(p for p in inference._LOADED.values() if p.version.study == study)
    m, key = pred.model, (person.pk, False)
    served, fold, scratch = [], [], []
    for _ in range(args.repeat):
        before = copy.deepcopy(pred.live[key].post)
        _rate_one(person, study, rng)
        served.append(_timed(lambda: pred.head(person)))
        ratings = pred._own_ratings(person, fitted=False)[0]
        rows = np.asarray([pred.rows[r[0]] for r in ratings], np.int64)
        f = T.Features.full(pred.x[rows], pred.crowd_feature(rows, person.pk))
        y = np.asarray([r[1] for r in ratings], np.float64)

        def one(post=before, f=f, y=y):
            post.add(f[:1], y[:1])  # ratings come newest first
            inference._adapted(post, m)

        fold.append(_timed(one))

        def closed_form(f=f, y=y):
            m.adapt(f, y)
            m.spread(f, fitted=False)

        scratch.append(_timed(closed_form))
    print(f"update cost per rating (n = {len(ratings)} ratings, d = {f.shape[1]}):")
    _line("served", served)
    _line("fold", fold)
    _line("from scratch", scratch)


def main() -> None:
    args = _args()
    import numpy as np

    data = tempfile.mkdtemp(prefix="palate-portrait-bench-")
    connection, old_name = setup_django(data, "portrait")
    if connection.vendor != "postgresql":
        sys.exit("Set DATABASE_URL to a PostgreSQL server (the figures are for it).")
    from django.conf import settings

    from portrait.models import PortraitSettings
    from rewardmodel import services as rm
    from rewardmodel.backbones import backbone_register

    def no_backbone(key):
        raise RuntimeError("planted embeddings are cached: nothing to embed")

    backbone_register("planted", no_backbone)
    rng = np.random.default_rng(args.seed)
    try:
        t0 = time.perf_counter()
        study, backbone = _study(args, rng)
        settings.REWARDMODEL_BACKBONE = backbone
        run = rm.training_run_execute(
            run_id=rm.training_run_create(study=study, promote="always").pk
        )
        assert run.status == "succeeded", run.error
        PortraitSettings.objects.create(study=study, enabled=True, min_ratings=5)
        person, client = _participant(study, args.ratings, rng)
        print(
            f"set-up {time.perf_counter() - t0:.0f} s: {args.images} images, "
            f"{args.raters} imported raters each ({args.annotators} raters), "
            f"dim {args.dim}; participant with {args.ratings} ratings; "
            f"version v{run.version.pk}"
        )
        print(f"load average before: {os.getloadavg()}")
        _measure(args, study, person, client, rng)
        _update_cost(args, study, person, rng)
        print(f"load average after: {os.getloadavg()}")
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
