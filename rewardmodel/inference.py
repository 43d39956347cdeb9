"""Inference: predicted scores of one annotator for images, from cached embeddings.

The public functions are ``predict`` and ``rank`` (used by the API and by prompt
optimization in ``generation``) and ``score_pixels`` for images not stored yet.
The active version is loaded once per process (cache keyed by version id); torch
is imported on first use, never at import time.

Annotators the version was trained on use their learned taste vector, bias and
scale. Anyone else gets a taste vector adapted in closed form from their current
valid ratings (ridge towards their demographic prior: cold start with none).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from annotation.models import Annotator
from core.exceptions import Conflict, NotFound

from .adapt import adapt_taste
from .models import ModelVersion

_LOCK = threading.Lock()
_LOADED: dict[int, Predictor] = {}
MAX_ADAPT_RATINGS = 500


@dataclass
class Predictor:
    version_id: int
    backbone: str
    model: object
    index: dict[str, int]
    taste: np.ndarray
    bias: np.ndarray
    log_scale: np.ndarray
    demo_weight: np.ndarray
    vocab: list[str]
    ridge: float
    norm: dict
    scale: tuple[float, float]
    # Image features (population score, taste projection) depend only on the
    # version: computed once per image and kept in flat arrays, so a warm
    # prediction is an index lookup plus one matrix-vector product.
    cache_index: dict = field(default_factory=dict)
    cache_pop: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    cache_z: np.ndarray | None = None
    max_cached: int = 500_000

    def features_for(self, image_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        from .embeddings import embedding_matrix

        index = self.cache_index
        missing = [i for i in dict.fromkeys(image_ids) if i not in index]
        if missing:
            emb = embedding_matrix(backbone=self.backbone, image_ids=missing)
            pop, z = self.image_features(emb)
            if self.cache_z is None or len(index) + len(missing) > self.max_cached:
                index.clear()
                self.cache_pop, self.cache_z = pop[:0], z[:0]
            base = len(index)
            for j, i in enumerate(missing):
                index[i] = base + j
            self.cache_pop = np.concatenate([self.cache_pop, pop])
            self.cache_z = np.concatenate([self.cache_z, z])
        rows = np.fromiter(
            (index[i] for i in image_ids), dtype=np.int64, count=len(image_ids)
        )
        return self.cache_pop[rows], self.cache_z[rows]

    def image_features(self, emb: np.ndarray):
        from .training import image_features

        return image_features(self.model, emb)

    def annotator_head(
        self, annotator: Annotator
    ) -> tuple[np.ndarray, float, float, float, float, str]:
        """(taste, log_scale, bias, mean, std, how) for this annotator."""
        key = str(annotator.pk)
        if key in self.index and key in self.norm["per_annotator"]:
            i = self.index[key]
            m, s = self.norm["per_annotator"][key]
            return (
                self.taste[i],
                float(self.log_scale[i]),
                float(self.bias[i]),
                m,
                s,
                "trained",
            )
        from .data import demographic_features

        demo, _ = demographic_features(
            {key: annotator.demographics or {}}, [key], vocab=self.vocab
        )
        prior = self.demo_weight @ demo[0]
        ratings = _adaptation_ratings(annotator, self.backbone)
        if len(ratings) < 2:
            m, s = self.norm["global"]
            return prior, 0.0, 0.0, m, s, "cold start"
        ys = np.asarray([r[1] for r in ratings], dtype=np.float64)
        m, s = float(ys.mean()), max(float(ys.std()), 0.25)
        pop, z = self.features_for([r[0] for r in ratings])
        u = adapt_taste(z=z, residual=(ys - m) / s - pop, prior=prior, ridge=self.ridge)
        return u, 0.0, 0.0, m, s, f"adapted from {len(ratings)} ratings"


def _adaptation_ratings(annotator: Annotator, backbone: str) -> list[tuple[int, int]]:
    from .data import ratings_queryset
    from .models import Embedding

    rows = list(
        ratings_queryset()
        .filter(annotator=annotator)
        .order_by("-pk")
        .values_list("image_id", "score")[:MAX_ADAPT_RATINGS]
    )
    have = set(
        Embedding.objects.filter(
            backbone=backbone, image_id__in=[r[0] for r in rows]
        ).values_list("image_id", flat=True)
    )
    return [r for r in rows if r[0] in have]


def load(version: ModelVersion) -> Predictor:
    with _LOCK:
        if version.pk in _LOADED:
            return _LOADED[version.pk]
        import torch

        from .net import TasteModel
        from .training import head_params

        ckpt = torch.load(
            version.checkpoint_path, map_location="cpu", weights_only=True
        )
        model = TasteModel.from_checkpoint(ckpt)
        hp = head_params(model)
        keys = ckpt["annotator_keys"]
        pred = Predictor(
            version_id=version.pk,
            backbone=ckpt["backbone"],
            model=model,
            index={k: i for i, k in enumerate(keys)},
            taste=hp["taste"],
            bias=hp["bias"],
            log_scale=hp["log_scale"],
            demo_weight=hp["demo_weight"],
            vocab=list(ckpt["demographics_vocab"]),
            ridge=float(ckpt["ridge"]),
            norm=ckpt["normalisation"],
            scale=tuple(ckpt["scale"]),
        )
        _LOADED.clear()  # one version at a time per process
        _LOADED[version.pk] = pred
        return pred


def _version(version: ModelVersion | None) -> ModelVersion:
    if version is not None:
        return version
    active = ModelVersion.objects.filter(is_active=True).first()
    if active is None:
        raise Conflict("No active reward model version yet: train one first.")
    return active


def predict(
    *, annotator: Annotator, image_ids: list[int], version: ModelVersion | None = None
) -> dict:
    """Predicted scores on the annotator's own scale, in the order asked.

    Raises Conflict (listing them) when some images are not embedded yet."""
    version = _version(version)
    pred = load(version)
    ids = [int(i) for i in image_ids]
    try:
        pop, z = pred.features_for(ids)
    except KeyError as exc:
        missing = exc.args[0]
        raise Conflict(
            f"{len(missing)} image(s) have no {pred.backbone} embedding yet "
            f"(e.g. {missing[:5]}); they are embedded by the next training run or "
            "the rewardmodel.embed_images task."
        ) from None
    scores = _scores(pred, annotator, pop, z)
    return {
        "version": version.pk,
        "annotator": annotator.pk,
        "how": scores[1],
        "scores": dict(zip(ids, scores[0].tolist(), strict=True)),
    }


def _scores(pred: Predictor, annotator: Annotator, pop: np.ndarray, z: np.ndarray):
    u, log_scale, bias, m, s, how = pred.annotator_head(annotator)
    norm = np.exp(log_scale) * (pop + z @ u) + bias
    return m + s * norm, how


def rank(
    *, annotator: Annotator, image_ids: list[int], version: ModelVersion | None = None
) -> list[tuple[int, float]]:
    """Images best first for this annotator."""
    result = predict(annotator=annotator, image_ids=image_ids, version=version)
    return sorted(result["scores"].items(), key=lambda kv: -kv[1])


def score_pixels(
    *, annotator: Annotator, images: list[bytes], version: ModelVersion | None = None
) -> list[float]:
    """Scores for raw image bytes (e.g. candidates during prompt optimization),
    embedded on the fly with the version's backbone."""
    from .backbones import get_backbone

    pred = load(_version(version))
    if not images:
        return []
    emb = get_backbone(pred.backbone).embed(images)
    pop, z = pred.image_features(emb)
    return _scores(pred, annotator, pop, z)[0].tolist()


def annotator_get(pk: int) -> Annotator:
    try:
        return Annotator.objects.get(pk=pk)
    except Annotator.DoesNotExist:
        raise NotFound(f"No annotator {pk}.") from None
