"""Fitting the TasteModel (torch; imported lazily by the training service).

Loss = MSE on per-annotator normalised targets
     + ``rank_weight`` × logistic loss on within-annotator pairs rated differently
     + per-source weighted MSE of the calibrated population score on external data
     + L2 on the annotators' taste offsets (shrinks them towards the demographic
       prior, which is what makes cold start and k-shot adaptation meaningful).

Everything random draws from one seed: same data + same seed = same weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DEFAULT_CONFIG = {
    "rank": 16,
    "hidden": 128,
    "dropout": 0.1,
    "steps": 250,
    "batch_size": 4096,
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "rank_weight": 0.5,
    "taste_l2": 3e-3,
    "scale_l2": 1e-2,
    "test_images": 0.2,
    "unseen_annotators": 0.15,
    "ks": [0, 5, 10, 20],
}


@dataclass
class TrainData:
    emb: np.ndarray  # (n_rows, dim) float32
    row: np.ndarray  # per training rating: embedding row
    ann: np.ndarray  # per training rating: annotator index
    y: np.ndarray  # per training rating: normalised target
    demographics: np.ndarray  # (n_annotators, n_demo)
    e_row: np.ndarray  # external population: embedding row
    e_src: np.ndarray
    e_y: np.ndarray  # normalised per source
    source_weights: np.ndarray
    n_annotators: int


def _partners(ann: np.ndarray, rng: np.random.Generator) -> tuple:
    """For each rating, the start and count of its annotator's ratings in an
    annotator-sorted order, so a same-annotator partner is one random draw."""
    order = np.argsort(ann, kind="stable")
    sorted_ann = ann[order]
    n_ann = int(ann.max()) + 1 if ann.size else 0
    starts = np.searchsorted(sorted_ann, np.arange(n_ann))
    counts = np.bincount(ann, minlength=n_ann)
    return order, starts, counts


def fit(
    data: TrainData,
    *,
    config: dict,
    seed: int,
    on_step: Callable[[int, int, dict], None] | None = None,
):
    import torch

    from .net import TasteModel

    cfg = {**DEFAULT_CONFIG, **config}
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dim = data.emb.shape[1]
    model = TasteModel(
        dim=dim,
        n_annotators=data.n_annotators,
        n_demographics=data.demographics.shape[1],
        n_sources=len(data.source_weights),
        rank=cfg["rank"],
        hidden=cfg["hidden"],
        dropout=cfg["dropout"],
    )
    used_rows = np.unique(np.concatenate([data.row, data.e_row]))
    feat = data.emb[used_rows]
    model.feat_mean.copy_(torch.from_numpy(feat.mean(0)))
    model.feat_std.copy_(torch.from_numpy(feat.std(0) + 1e-3))
    model.demographics.copy_(torch.from_numpy(data.demographics))

    emb = torch.from_numpy(data.emb)
    row = torch.from_numpy(data.row)
    ann = torch.from_numpy(data.ann)
    y = torch.from_numpy(data.y.astype(np.float32))
    e_row = torch.from_numpy(data.e_row)
    e_src = torch.from_numpy(data.e_src)
    e_y = torch.from_numpy(data.e_y.astype(np.float32))
    src_w = torch.from_numpy(data.source_weights.astype(np.float32))
    order, starts, counts = _partners(data.ann, rng)

    shared = ("trunk", "population", "taste_head", "project")
    decay = [p for n, p in model.named_parameters() if n.startswith(shared)]
    other = [p for n, p in model.named_parameters() if not n.startswith(shared)]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg["weight_decay"]},
            {"params": other, "weight_decay": 0.0},
        ],
        lr=cfg["lr"],
    )
    steps = int(cfg["steps"])
    warm = max(1, steps // 10)

    def lr_factor(s: int) -> float:
        # Linear warm-up, then cosine decay to 5%.
        if s < warm:
            return (s + 1) / warm
        t = (s - warm) / max(1, steps - warm)
        return 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(t, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    n = data.y.size
    bs = min(int(cfg["batch_size"]), n)
    perm = rng.permutation(n)
    pos = 0
    model.train()
    last: dict = {}
    for step in range(steps):
        if pos + bs > n:
            perm, pos = rng.permutation(n), 0
        idx = perm[pos : pos + bs]
        pos += bs
        a = data.ann[idx]
        partner = order[starts[a] + (rng.random(bs) * counts[a]).astype(np.int64)]
        idx_t = torch.from_numpy(idx)
        par_t = torch.from_numpy(partner)
        rows = torch.cat([row[idx_t], row[par_t]])
        uniq, inverse = torch.unique(rows, return_inverse=True)
        pop, z = model.image_features(emb[uniq])
        anns = torch.cat([ann[idx_t], ann[par_t]])
        pred = model.score(pop[inverse], z[inverse], anns)
        p_i, p_j = pred[:bs], pred[bs:]
        y_i, y_j = y[idx_t], y[par_t]
        mse = torch.mean((p_i - y_i) ** 2)
        sign = torch.sign(y_i - y_j)
        mask = sign != 0
        if bool(mask.any()):
            rank_loss = torch.nn.functional.softplus(
                -sign[mask] * (p_i - p_j)[mask]
            ).mean()
        else:
            rank_loss = torch.zeros(())
        reg = cfg["taste_l2"] * model.taste.weight.pow(2).sum(1).mean()
        reg = reg + cfg["scale_l2"] * (
            model.log_scale.weight.pow(2).mean() + model.bias.weight.pow(2).mean()
        )
        loss = mse + cfg["rank_weight"] * rank_loss + reg
        ext_loss = torch.zeros(())
        if e_y.numel():
            eb = torch.from_numpy(
                rng.integers(0, e_y.numel(), size=min(bs, e_y.numel()))
            )
            ep = model.external(emb[e_row[eb]], e_src[eb])
            ext_loss = (src_w[e_src[eb]] * (ep - e_y[eb]) ** 2).mean()
            loss = loss + ext_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        last = {
            "loss": loss.item(),
            "mse": mse.item(),
            "rank": rank_loss.item(),
            "ext": ext_loss.item(),
        }
        if on_step is not None:
            on_step(step + 1, steps, last)
    model.eval()
    return model, last


def refit_demographic_prior(model, *, seen: np.ndarray) -> float:
    """Re-estimate the demographics → taste map in closed form from the learned
    taste vectors of the trained annotators (group means, shrunk), keeping every
    trained annotator's total taste vector unchanged.

    Adam moves the per-annotator offsets as fast as the shared map, so after SGD
    the split between "group" and "individual" is arbitrary; cold start needs the
    group part to be the best guess for a newcomer, which this regression gives.
    """
    import torch

    with torch.no_grad():
        demo = model.demographics.numpy().astype(np.float64)
        w_old = model.demo.weight.numpy().astype(np.float64)  # (rank, n_demo)
        total = model.taste.weight.numpy().astype(np.float64) + demo @ w_old.T
        d_seen, u_seen = demo[seen], total[seen]
        eye = np.eye(demo.shape[1])
        # Empirical Bayes: shrink the group effects by how far they stand out of
        # the spread within groups (noise-only groups shrink to the population).
        w0 = np.linalg.solve(d_seen.T @ d_seen + 1e-3 * eye, d_seen.T @ u_seen)
        within = float(np.mean((u_seen - d_seen @ w0) ** 2))
        counts = d_seen.sum(0)
        used = counts > 0
        n_bar = float(counts[used].mean()) if used.any() else 1.0
        between = float(np.mean(w0[used] ** 2)) - within / n_bar if used.any() else 0.0
        ridge = within / between if between > 1e-8 else 1e6
        w_new = np.linalg.solve(d_seen.T @ d_seen + ridge * eye, d_seen.T @ u_seen)
        offsets = total - demo @ w_new
        offsets[~seen] = 0.0  # never trained: their taste is the prior alone
        model.demo.weight.copy_(torch.from_numpy(w_new.T.astype(np.float32)))
        model.taste.weight.copy_(torch.from_numpy(offsets.astype(np.float32)))
    return ridge


def image_features(model, emb: np.ndarray, *, batch: int = 8192):
    """Population score and taste projection for embedding rows, as numpy."""
    import torch

    pops, zs = [], []
    with torch.inference_mode():
        for start in range(0, len(emb), batch):
            p, z = model.image_features(torch.from_numpy(emb[start : start + batch]))
            pops.append(p.numpy())
            zs.append(z.numpy())
    if not pops:
        rank = model.config["rank"]
        return np.zeros(0, dtype=np.float32), np.zeros((0, rank), dtype=np.float32)
    return np.concatenate(pops), np.concatenate(zs)


def head_params(model) -> dict:
    """The per-annotator and prior parameters as numpy (what scoring needs
    besides the image features)."""
    import torch

    with torch.inference_mode():
        demo = model.demographics.numpy()
        prior = demo @ model.demo.weight.numpy().T
        return {
            "taste": model.taste.weight.numpy() + prior,
            "taste_offset": model.taste.weight.numpy().copy(),
            "bias": model.bias.weight.numpy()[:, 0].copy(),
            "log_scale": model.log_scale.weight.numpy()[:, 0].copy(),
            "demo_weight": model.demo.weight.numpy().copy(),  # (rank, n_demo)
        }


def ridge_lambda(*, residual_var: float, taste_offsets: np.ndarray) -> float:
    """Empirical-Bayes ridge strength for k-shot adaptation: noise variance over
    the spread of the learned taste offsets around their demographic prior."""
    tau2 = float(np.mean(taste_offsets**2)) if taste_offsets.size else 0.0
    if tau2 <= 1e-8:
        return 1e3
    return float(np.clip(residual_var / tau2, 1e-2, 1e4))


@dataclass
class Result:
    model: object
    summary: dict
    per_annotator: list
    counts: dict
    checkpoint_extra: dict


def train_and_evaluate(
    *,
    snap,
    emb: np.ndarray,
    cfg: dict,
    on_step: Callable[[int, int, dict], None] | None = None,
    on_stage: Callable[[str, float], None] | None = None,
    log: Callable[[str], None] = lambda msg: None,
    min_train: int = 10,
) -> Result:
    """Split, normalise, fit, evaluate: everything between the data snapshot and
    the saved checkpoint, with no database access (the benchmarks call it too)."""
    from . import data as D
    from .evaluation import Head, evaluate

    seed = int(cfg["seed"])
    split = D.split_make(
        snap,
        seed=seed,
        test_images=cfg["test_images"],
        unseen_annotators=cfg["unseen_annotators"],
    )
    n_ann = len(snap.annotator_keys)
    tr = split.train
    norm_mean, norm_std = D.normalisation(snap.r_score[tr], snap.r_ann[tr], n_ann)
    # Unseen annotators' statistics stay unused by training (kept for the record).
    seen_keys = [k for k, s in zip(snap.annotator_keys, split.seen, strict=True) if s]
    _, vocab = D.demographic_features(snap.demographics, seen_keys)
    demo, _ = D.demographic_features(
        snap.demographics, snap.annotator_keys, vocab=vocab
    )
    y = (snap.r_score - norm_mean[snap.r_ann]) / norm_std[snap.r_ann]
    # External population scores: drop test images, z-score per source.
    keep = ~split.test_row[snap.e_row] if snap.e_row.size else np.zeros(0, bool)
    e_row, e_src, e_score = snap.e_row[keep], snap.e_src[keep], snap.e_score[keep]
    src_mean, src_std = D.normalisation(e_score, e_src, len(snap.sources))
    e_y = (e_score - src_mean[e_src]) / src_std[e_src] if e_score.size else e_score
    counts = {
        **snap.counts,
        "train_ratings": int(tr.sum()),
        "seen_test_ratings": int(split.seen_test.sum()),
        "unseen_annotators": int((~split.seen[: snap.n_real_annotators]).sum()),
        "unseen_query_ratings": int(split.unseen_query.sum()),
        "test_images": int(split.test_row.sum()),
    }
    log(f"split: {counts}")
    if counts["train_ratings"] < min_train:
        raise ValueError("Too few training ratings after the split.")

    train = TrainData(
        emb=emb,
        row=snap.r_row[tr],
        ann=snap.r_ann[tr],
        y=y[tr],
        demographics=demo,
        e_row=e_row,
        e_src=e_src,
        e_y=e_y,
        source_weights=np.asarray(
            [s["weight"] for s in snap.sources], dtype=np.float32
        ),
        n_annotators=n_ann,
    )
    model, last = fit(train, config=cfg, seed=seed, on_step=on_step)
    demo_ridge = refit_demographic_prior(model, seen=split.seen)
    log(f"demographic prior refit, ridge {demo_ridge:.3g}")
    log(f"trained {cfg['steps']} steps: {last}")

    if on_stage is not None:
        on_stage("evaluating", 0.87)
    pop, z = image_features(model, emb)
    hp = head_params(model)
    pred_tr = (
        np.exp(hp["log_scale"][train.ann])
        * (pop[train.row] + np.einsum("ij,ij->i", z[train.row], hp["taste"][train.ann]))
        + hp["bias"][train.ann]
    )
    resid_var = float(np.mean((pred_tr - train.y) ** 2))
    seen_idx = np.flatnonzero(split.seen)
    ridge = ridge_lambda(
        residual_var=resid_var, taste_offsets=hp["taste_offset"][seen_idx]
    )
    head = Head(
        taste=hp["taste"],
        bias=hp["bias"],
        log_scale=hp["log_scale"],
        demo_weight=hp["demo_weight"],
        ridge=ridge,
    )
    summary, per_annotator = evaluate(
        snap=snap,
        split=split,
        pop=pop,
        z=z,
        head=head,
        norm_mean=norm_mean,
        norm_std=norm_std,
        demo=demo,
        ks=list(cfg["ks"]),
        seed=seed,
    )
    summary["train"] = {**last, "residual_var": resid_var, "ridge": ridge}
    log(f"primary metric (seen pairwise accuracy): {summary['primary_metric']}")

    seen_set = set(seen_idx.tolist())
    extra = dict(
        annotator_keys=[snap.annotator_keys[i] for i in range(n_ann)],
        trained_annotators=[snap.annotator_keys[i] for i in sorted(seen_set)],
        normalisation={
            "per_annotator": {
                snap.annotator_keys[i]: [float(norm_mean[i]), float(norm_std[i])]
                for i in sorted(seen_set)
            },
            "global": [
                float(np.mean(norm_mean[seen_idx])),
                float(np.mean(norm_std[seen_idx])),
            ],
            "sources": {
                s["name"]: [float(src_mean[i]), float(src_std[i])]
                for i, s in enumerate(snap.sources)
            },
        },
        demographics_vocab=vocab,
        ridge=ridge,
        train_config=cfg,
        seed=seed,
        scale=list(snap.scale),
    )
    return Result(
        model=model,
        summary=summary,
        per_annotator=per_annotator,
        counts=counts,
        checkpoint_extra=extra,
    )
