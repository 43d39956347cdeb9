"""Training memory grows with the ratings, not with annotators × images, and
holds no extra copies of the rating features (issue 29: 300,000 ratings peaked
at 1.8 GB; a million must fit 4 GB). Memory is counted with ``tracemalloc``
(numpy reports its buffers to it), which is exact and the same on every run:
nothing here is timed."""

import tracemalloc
from types import SimpleNamespace

import numpy as np

from rewardmodel import posterior as P
from rewardmodel import taste as T
from rewardmodel.crowd import Crowd
from rewardmodel.evaluation import CODES
from rewardmodel.threads import compute_threads
from rewardmodel.training import train_and_evaluate

SPLITS = np.asarray([CODES[s] for s in ("train", "val_seen", "test_seen")])


def sparse_study(seed: int, *, n_img: int, n_ann: int, per_image: int, dim: int):
    """Many images and annotators, few ratings each: a dense annotators ×
    images array would dwarf everything that grows with the ratings."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n_img, dim)).astype(np.float32)
    taste = rng.normal(size=dim) + rng.normal(size=(n_ann, dim))
    rows = np.repeat(np.arange(n_img), per_image)
    anns = (rows * per_image + np.tile(np.arange(per_image), n_img)) % n_ann
    u = np.einsum("ij,ij->i", emb[rows], taste[anns]) / np.sqrt(dim)
    scores = np.clip(np.rint(4 + 1.5 * u + rng.normal(0, 0.5, rows.size)), 1, 7)
    # Seen annotators: 70% of the images to train, 15% each to val_seen and
    # test_seen; the last 10% of the annotators are newcomers (val_unseen /
    # test_unseen).
    split = SPLITS[np.searchsorted([14, 17], rows % 20, side="right")]
    new = anns >= int(n_ann * 0.9)
    split[new] = np.where(anns[new] % 2, CODES["val_unseen"], CODES["test_unseen"])
    snap = SimpleNamespace(
        r_row=rows,
        r_ann=anns,
        r_score=scores.astype(np.float64),
        r_split=split,
        annotator_keys=[str(a) for a in range(n_ann)],
        counts={"ratings_train": int((split == CODES["train"]).sum())},
        e_score=np.zeros(0),
        e_row=np.zeros(0, np.int64),
        e_src=np.zeros(0, np.int64),
        sources=[],
    )
    return snap, emb


def peak_bytes(fn) -> tuple[int, object]:
    """The most memory ``fn()`` held above what was allocated before it."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = fn()
        return tracemalloc.get_traced_memory()[1] - before, out
    finally:
        tracemalloc.stop()


def train_peak(scale: int) -> tuple[int, int]:
    """Peak bytes of a training run on ``scale`` × (1,000 annotators, 6,000
    images, 3 ratings per image: 18 per annotator), and the bytes of one dense
    annotators × images float64 array at that size."""
    n_ann, n_img = 1000 * scale, 6000 * scale
    snap, emb = sparse_study(7, n_img=n_img, n_ann=n_ann, per_image=3, dim=16)
    with compute_threads():
        peak, res = peak_bytes(
            lambda: train_and_evaluate(snap=snap, emb=emb, cfg={"seed": 7})
        )
    assert res.summary["seen"]["n_annotators"] > 0
    return peak, n_ann * n_img * 8


def test_training_memory_is_linear_in_ratings_not_annotators_times_images():
    """Twice the images and twice the annotators at the same ratings per
    annotator: twice the ratings, four times annotators × images. The peak must
    follow the ratings; and it stays below one dense annotators × images
    float64 array at the larger size."""
    small, _ = train_peak(1)
    large, dense = train_peak(2)
    assert large < 2.3 * small, (small, large)
    assert large < dense, (large, dense)


def test_heads_hold_no_float64_copy_of_the_features():
    """The residuals y − F bᵀ are computed a block at a time: the solver's
    extra memory is well under one float64 copy of F (2 × F's own bytes), for
    the grid (eigendecompositions) and the deployed refit's single solve."""
    rng = np.random.default_rng(3)
    n_ann, per, d = 500, 200, 66
    f = rng.normal(size=(n_ann * per, d)).astype(np.float32)
    y = rng.normal(size=n_ann * per)
    ann = np.repeat(np.arange(n_ann), per)
    prior = P.prior_diag(d - 2, 1.0)
    base = rng.normal(size=d) * 0.1
    for bases, taus in (([base, 0 * base], [0.1, 1.0]), ([base], [1.0])):
        peak, (grid, _) = peak_bytes(
            lambda b=bases, t=taus: P.heads_grid(f, y, ann, n_ann, prior, b, t)
        )
        assert peak < grid.nbytes + 0.5 * f.nbytes, (peak, f.nbytes)


def test_features_gathered_without_a_second_copy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, 64)).astype(np.float32)
    rows = rng.integers(0, 500, size=60_000)
    crowd = rng.normal(size=rows.size)
    peak, f = peak_bytes(lambda: T.Features.full_rows(x, rows, crowd))
    assert np.array_equal(f, T.Features.full(x[rows], crowd))
    assert peak < 1.25 * f.nbytes, (peak, f.nbytes)


def test_own_scores_do_not_scale_with_the_images():
    """An annotator's own ratings are looked up among their rows, not through
    an array over every image row (annotators × images over a view)."""
    n_rows = 2_000_000
    crowd = Crowd(
        np.zeros(n_rows),
        np.zeros(n_rows),
        {0: (np.array([5, 1_999_999, 7]), np.array([0.5, -1.0, 2.0]))},
    )
    rows = np.array([7, 8, 1_999_999, 5, 5])
    peak, got = peak_bytes(lambda: crowd.own_scores(0, rows))
    assert np.array_equal(got, [2.0, np.nan, -1.0, 0.5, 0.5], equal_nan=True)
    assert peak < 100_000, peak
