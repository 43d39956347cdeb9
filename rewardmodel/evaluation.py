"""Evaluation of a trained model and its baselines on the same split (numpy only).

Works on image features already computed by the model (population score ``pop``
and taste projection ``Z`` per embedding row) and the per-annotator head, so the
same scoring code serves evaluation and inference.

Per annotator and split: the model, the population component alone, the
annotator's mean, the leave-one-out consensus (mean normalised score of the other
raters of the same image), and a noise ceiling when repeated ratings exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .adapt import adapt_taste
from .data import Snapshot, Split, normalisation
from .metrics import all_metrics, mean_of

BASELINES = ("population", "annotator_mean", "loo_consensus")


@dataclass
class Head:
    taste: np.ndarray  # (n_annotators, rank): offset + demographic prior
    bias: np.ndarray
    log_scale: np.ndarray
    demo_weight: np.ndarray  # (rank, n_demo)
    ridge: float

    def seen(self, a: int, pop: np.ndarray, z: np.ndarray) -> np.ndarray:
        return np.exp(self.log_scale[a]) * (pop + z @ self.taste[a]) + self.bias[a]

    def prior(self, demo_vec: np.ndarray) -> np.ndarray:
        return self.demo_weight @ demo_vec


def _loo_consensus(snap: Snapshot) -> np.ndarray:
    """Per rating: mean of the *other* real raters' normalised scores of the same
    image (NaN when nobody else rated it)."""
    n_real = snap.n_real_annotators
    real = snap.r_ann < n_real
    mean, std = normalisation(snap.r_score[real], snap.r_ann[real], n_real)
    z = np.zeros_like(snap.r_score)
    z[real] = (snap.r_score[real] - mean[snap.r_ann[real]]) / std[snap.r_ann[real]]
    sums = np.bincount(snap.r_row[real], weights=z[real], minlength=snap.n_rows)
    cnts = np.bincount(snap.r_row[real], minlength=snap.n_rows).astype(np.float64)
    own = np.where(real, z, 0.0)
    others = cnts[snap.r_row] - real
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(others > 0, (sums[snap.r_row] - own) / others, np.nan)


def _annotator_rows(
    *, y: np.ndarray, preds: dict[str, np.ndarray]
) -> tuple[dict, dict]:
    model = all_metrics(y, preds["model"])
    base = {name: all_metrics(y, preds[name]) for name in BASELINES}
    return model, base


def _summary(rows: list[dict]) -> dict:
    out = {"n_annotators": len(rows)}
    for who in ("model", *BASELINES):
        out[who] = {
            m: mean_of(r[who][m] for r in rows)
            for m in ("pairwise_accuracy", "spearman", "pearson", "mae")
        }
    out["noise_ceiling"] = None
    return out


def evaluate(
    *,
    snap: Snapshot,
    split: Split,
    pop: np.ndarray,
    z: np.ndarray,
    head: Head,
    norm_mean: np.ndarray,
    norm_std: np.ndarray,
    demo: np.ndarray,
    ks: list[int],
    seed: int,
) -> tuple[dict, list[dict]]:
    """Returns (summary, per-annotator rows). Predictions are mapped back to each
    annotator's own scale for MAE; rankings are unaffected by that."""
    rng = np.random.default_rng(seed + 1)
    loo = _loo_consensus(snap)
    per_annotator: list[dict] = []
    seen_rows: list[dict] = []

    # Seen annotators, held-out images.
    for a in np.flatnonzero(split.seen[: snap.n_real_annotators]):
        sel = split.seen_test & (snap.r_ann == a)
        if sel.sum() < 2:
            continue
        y = snap.r_score[sel]
        rows = snap.r_row[sel]
        m, s = norm_mean[a], norm_std[a]
        loo_a = loo[sel]
        preds = {
            "model": m + s * head.seen(a, pop[rows], z[rows]),
            "population": m + s * pop[rows],
            "annotator_mean": np.full(y.size, m),
            "loo_consensus": m + s * np.where(np.isnan(loo_a), 0.0, loo_a),
        }
        model_m, base_m = _annotator_rows(y=y, preds=preds)
        row = {
            "annotator": snap.annotator_keys[a],
            "split": "seen",
            "k": None,
            "n_test": int(y.size),
            "model": model_m,
            **base_m,
        }
        seen_rows.append(row)
        per_annotator.append(row)

    summary = {"seen": _summary(seen_rows), "unseen": {}}

    # Unseen annotators: k ratings of train images adapt the taste vector.
    unseen = np.flatnonzero(~split.seen[: snap.n_real_annotators])
    by_k: dict[int, list[dict]] = {k: [] for k in ks}
    for a in unseen:
        q = split.unseen_query & (snap.r_ann == a)
        if q.sum() < 2:
            continue
        support_idx = np.flatnonzero(split.unseen_support & (snap.r_ann == a))
        support_idx = support_idx[rng.permutation(support_idx.size)]
        y = snap.r_score[q]
        q_rows = snap.r_row[q]
        prior = head.prior(demo[a])
        loo_a = loo[q]
        for k in ks:
            if k > support_idx.size:
                continue
            sup = support_idx[:k]
            ys = snap.r_score[sup]
            if k >= 2:
                m = float(ys.mean())
                s = max(float(ys.std()), 0.25)
            else:
                # No usable statistics of their own: the training population's.
                m, s = float(np.mean(norm_mean)), float(np.mean(norm_std))
            s_rows = snap.r_row[sup]
            u = adapt_taste(
                z=z[s_rows],
                residual=(ys - m) / s - pop[s_rows],
                prior=prior,
                ridge=head.ridge,
            )
            preds = {
                "model": m + s * (pop[q_rows] + z[q_rows] @ u),
                "population": m + s * pop[q_rows],
                "annotator_mean": np.full(y.size, m),
                "loo_consensus": m + s * np.where(np.isnan(loo_a), 0.0, loo_a),
            }
            model_m, base_m = _annotator_rows(y=y, preds=preds)
            row = {
                "annotator": snap.annotator_keys[a],
                "split": "unseen",
                "k": k,
                "n_test": int(y.size),
                "model": model_m,
                **base_m,
            }
            by_k[k].append(row)
            per_annotator.append(row)
    for k in ks:
        summary["unseen"][f"k={k}"] = _summary(by_k[k])
    summary["primary_metric"] = summary["seen"]["model"]["pairwise_accuracy"]
    return summary, per_annotator
