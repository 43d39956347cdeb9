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
    "rank": 32,
    "hidden": 128,
    "dropout": 0.1,
    "steps": 400,
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

    decay = [
        p
        for n, p in model.named_parameters()
        if n.startswith(("population", "project"))
    ]
    other = [
        p
        for n, p in model.named_parameters()
        if not n.startswith(("population", "project"))
    ]
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
