"""External population scores (e.g. AVA-style mean scores per image).

They train the population head only (z-scored per source, weighted). Ratings by
individual people are not external scores: ``import_ratings`` makes them real
study ratings (``annotation.services.ratings_import``).
"""

from __future__ import annotations

import math
from pathlib import Path

from django.db import transaction

from annotation.datasets.services.import_input import inside
from annotation.models import Image, Study
from core.exceptions import InvalidInput

from ..models import ExternalItem, ExternalScore, ExternalSource


def _scores(rows: list[dict]) -> list[float]:
    out = []
    for n, r in enumerate(rows, start=1):
        if str(r.get("user") or "").strip():
            raise InvalidInput(
                f"row {n}: has a 'user': ratings by individual people are imported "
                "as study ratings with import_ratings, not as external scores."
            )
        try:
            score = float(r["score"])
            if not math.isfinite(score):
                raise ValueError
            out.append(score)
        except (KeyError, TypeError, ValueError):
            raise InvalidInput(
                f"row {n}: 'score' is missing or not a finite number."
            ) from None
    return out


def _scale(scores, scale_min, scale_max) -> tuple[float, float]:
    lo = min(scores) if scale_min is None else scale_min
    hi = max(scores) if scale_max is None else scale_max
    if lo >= hi:
        raise InvalidInput(
            "The scale needs scale_min < scale_max (give --scale-min/--scale-max)."
        )
    bad = [n for n, s in enumerate(scores, start=1) if not lo <= s <= hi]
    if bad:
        raise InvalidInput(f"rows {bad[:5]}: score outside [{lo}, {hi}].")
    return lo, hi


class _Resolver:
    """Finds the image of a row: a study image id, its sha256, or a file."""

    def __init__(self, study: Study, base: Path):
        self.study, self.base = study, base
        self.by_id = set(Image.objects.filter(study=study).values_list("pk", flat=True))
        self.by_sha = dict(
            Image.objects.filter(study=study).values_list("sha256", "pk")
        )

    def __call__(self, n: int, r: dict) -> tuple[str, int | None, str]:
        if str(r.get("image") or "").strip():
            try:
                image_id = int(r["image"])
            except ValueError:
                image_id = None
            if image_id not in self.by_id:
                raise InvalidInput(
                    f"row {n}: image {r['image']} is not in study '{self.study.slug}'."
                )
            return f"image:{image_id}", image_id, ""
        if str(r.get("sha256") or "").strip():
            image_id = self.by_sha.get(str(r["sha256"]).strip())
            if image_id is None:
                raise InvalidInput(f"row {n}: no image with that sha256 in the study.")
            return f"image:{image_id}", image_id, ""
        if str(r.get("path") or "").strip():
            p = inside(
                self.base, str(r["path"]).strip(), where=f"row {n}", field="path"
            )
            return f"path:{p}", None, str(p)
        raise InvalidInput(f"row {n}: needs one of 'image', 'sha256' or 'path'.")


def external_scores_import(
    *,
    study: Study,
    rows: list[dict],
    source_name: str,
    base_dir=None,
    scale_min: float | None = None,
    scale_max: float | None = None,
    weight: float = 0.5,
    description: str = "",
) -> dict:
    """Import population mean scores into a source attached to ``study``.

    Each row has ``score`` and one of ``image`` (a study image id), ``sha256`` (of
    a study image) or ``path`` (a file relative to ``base_dir``: embedded like any
    image, never shown to annotators); optional ``n`` (ratings averaged).
    Re-importing updates scores."""
    if not rows:
        raise InvalidInput("No rows to import.")
    scores = _scores(rows)
    lo, hi = _scale(scores, scale_min, scale_max)
    resolve = _Resolver(study, Path(base_dir) if base_dir else Path.cwd())
    resolved = [
        (*resolve(n, r), score, int(r["n"]) if r.get("n") not in (None, "") else None)
        for n, (r, score) in enumerate(zip(rows, scores, strict=True), start=1)
    ]
    created = updated = 0
    with transaction.atomic():
        source, _ = ExternalSource.objects.get_or_create(
            name=source_name,
            defaults={
                "study": study,
                "kind": ExternalSource.Kind.POPULATION,
                "scale_min": lo,
                "scale_max": hi,
                "weight": weight,
                "description": description,
            },
        )
        if source.kind != ExternalSource.Kind.POPULATION:
            raise InvalidInput(f"Source '{source_name}' holds per-user scores.")
        items = {}
        for key, image_id, path, score, n_ratings in resolved:
            if key not in items:
                items[key], _ = ExternalItem.objects.get_or_create(
                    source=source,
                    key=key[:300],
                    defaults={"image_id": image_id, "path": path},
                )
            _, was_created = ExternalScore.objects.update_or_create(
                item=items[key],
                rater="",
                defaults={"score": score, "n_ratings": n_ratings},
            )
            created += was_created
            updated += not was_created
    return {
        "source": source.name,
        "items": len(items),
        "created": created,
        "updated": updated,
        "scale": [lo, hi],
    }
