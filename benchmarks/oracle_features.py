"""DIAGNOSTIC ONLY, not a product backbone: "oracle features" of the procedural
images (``pixelstats:v1`` / ``pixelstats:v2``).

These hand-made statistics mirror the procedural generator's rendering steps one
by one (their linear-probe R² on the 8 planted attributes is 0.76–0.79, against
0.26–0.28 for generic features), so a model on them measures a linear fit on
near-oracle features. They are kept to show the gap between oracle and generic
features; no headline figure uses them. ``register()`` makes the keys known to
``rewardmodel.backbones`` inside a benchmark process.
"""

from __future__ import annotations

import numpy as np

from rewardmodel.backbones import Backbone, backbone_register, to_rgb

_PS_SIZE = 128
_HUE_BINS = 12


def _grad(lum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gx = np.zeros_like(lum)
    gy = np.zeros_like(lum)
    gx[:, 1:-1] = (lum[:, 2:] - lum[:, :-2]) / 2
    gy[1:-1, :] = (lum[2:, :] - lum[:-2, :]) / 2
    return gx, gy


def _box(a: np.ndarray, k: int) -> np.ndarray:
    from numpy.lib.stride_tricks import sliding_window_view

    padded = np.pad(a, k // 2, mode="edge")
    return sliding_window_view(padded, (k, k)).mean(axis=(-1, -2))


def _nonempty(mask: np.ndarray) -> np.ndarray:
    """The mask, or every pixel when it selects none (a flat image has no edges)."""
    return mask if mask.any() else np.ones_like(mask)


def _pixelstats(image, *, fast: bool = False) -> np.ndarray:
    """Colour, tone, layout, edge, shape and texture statistics of a thumbnail.

    Not learned and not semantic: a documented stand-in that lets the offline
    benchmark test the *reward model* when no pretrained CLIP can be loaded. Groups:
    colour moments and hue histogram; tone histogram and percentiles; a 4×4 layout
    of luminance and saturation; edge density at three scales and the edge
    orientation histogram; structure-tensor cornerness and curvature (straight
    versus curved contours); mirror symmetry; fine-grain residual.

    ``fast`` (v2) takes box means from an integral image: same values up to float
    rounding, so v1 keeps the slow path and its cached embeddings stay valid.
    """
    from PIL import Image as PILImage
    from PIL import ImageFilter

    rgb_im = to_rgb(image).resize((_PS_SIZE, _PS_SIZE), PILImage.Resampling.BILINEAR)
    rgb = np.asarray(rgb_im, dtype=np.float32) / 255.0
    hsv = np.asarray(rgb_im.convert("HSV"), dtype=np.float32) / 255.0
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    lum = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    f: list[float] = []
    f += list(rgb.reshape(-1, 3).mean(0))
    f += list(rgb.reshape(-1, 3).std(0) * 2)
    f += [float(s.mean()), float(v.mean()), float(lum.std() * 2)]
    weights = s * v
    hist, _ = np.histogram(h, bins=_HUE_BINS, range=(0, 1), weights=weights)
    f += list(hist / (weights.sum() + 1e-6))
    tone, _ = np.histogram(lum, bins=8, range=(0, 1))
    f += list(tone / lum.size)
    f += [float(np.percentile(lum, q)) for q in (5, 25, 75, 95)]
    f += [
        float((rgb[..., 0] - rgb[..., 2]).mean() * 2),
        float((rgb[..., 1] - rgb[..., 2]).mean() * 2),
    ]
    for lo, hi in ((0, 0.33), (0.33, 0.66), (0.66, 1.01)):
        mask = (lum >= lo) & (lum < hi)
        f.append(float(s[mask].mean()) if mask.any() else 0.0)
    g = _PS_SIZE // 4
    f += list(lum.reshape(4, g, 4, g).mean(axis=(1, 3)).ravel())
    f += list(s.reshape(4, g, 4, g).mean(axis=(1, 3)).ravel())
    # Edges at three scales.
    gray = PILImage.fromarray((lum * 255).astype(np.uint8))
    for size in (_PS_SIZE, _PS_SIZE // 2, _PS_SIZE // 4):
        small = (
            np.asarray(
                gray.resize((size, size), PILImage.Resampling.BILINEAR),
                dtype=np.float32,
            )
            / 255.0
        )
        mag = np.hypot(*_grad(small))
        f += [
            float(mag.mean() * 10),
            float((mag > 0.02).mean()),
            float((mag > 0.06).mean()),
        ]
    gx, gy = _grad(lum)
    mag = np.hypot(gx, gy)
    ang = np.mod(np.arctan2(gy, gx), np.pi)
    ohist, _ = np.histogram(ang, bins=8, range=(0, np.pi), weights=mag)
    ohist = ohist / (ohist.sum() + 1e-6)
    f += list(ohist) + [float(-(ohist * np.log(ohist + 1e-9)).sum())]
    # Structure tensor on smoothed luminance: ~0 along straight edges, larger at
    # corners and along curves; orientation change between neighbours = curvature.
    for blur, win in ((1.0, 5), (1.5, 7), (2.0, 9)):
        sm = (
            np.asarray(gray.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32)
            / 255.0
        )
        sx, sy = _grad(sm)
        box = _box_sum if fast else _box
        jxx, jyy, jxy = box(sx * sx, win), box(sy * sy, win), box(sx * sy, win)
        tr = jxx + jyy
        det = jxx * jyy - jxy**2
        edge = _nonempty(tr > np.percentile(tr, 85))
        ratio = det[edge] / (tr[edge] ** 2 + 1e-12)
        f += [
            float(ratio.mean() * 4),
            float(np.percentile(ratio, 50) * 4),
            float(np.percentile(ratio, 90) * 4),
            float((ratio > 0.1).mean()),
        ]
        theta = np.arctan2(2 * jxy, jxx - jyy) / 2
        turn = np.abs(np.angle(np.exp(2j * (theta[:, 1:] - theta[:, :-1])))) / 2
        f.append(float(turn[edge[:, 1:]].mean()))
    lap = np.abs(
        4 * lum[1:-1, 1:-1]
        - lum[:-2, 1:-1]
        - lum[2:, 1:-1]
        - lum[1:-1, :-2]
        - lum[1:-1, 2:]
    )
    f += [
        float(lap.mean() / (mag.mean() + 1e-6)),
        float(np.percentile(lap, 99) / (np.percentile(mag, 99) + 1e-6)),
    ]
    f += [
        1.0 - float(np.abs(lum - lum[:, ::-1]).mean() * 4),
        1.0 - float(np.abs(lum - lum[::-1, :]).mean() * 4),
        float(lum[g:-g, g:-g].mean() - lum.mean()) * 4,
        float(s[g:-g, g:-g].mean() - s.mean()) * 4,
    ]
    blur = (rgb[:-1, :-1] + rgb[1:, :-1] + rgb[:-1, 1:] + rgb[1:, 1:]) / 4
    f += list(np.abs(rgb[:-1, :-1] - blur).reshape(-1, 3).mean(0) * 10)
    q = (rgb * 3.99).astype(np.int32)
    f.append(len(np.unique(q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2])) / 64)
    out = np.asarray(f, dtype=np.float32)
    assert out.size == PIXELSTATS_DIM, out.size
    return out


PIXELSTATS_DIM = 3 + 3 + 3 + _HUE_BINS + 8 + 4 + 2 + 3 + 32 + 9 + 9 + 15 + 2 + 4 + 3 + 1


def _euler4(mask: np.ndarray) -> float:
    """Euler number (blobs minus holes, 4-connectivity) from 2×2 bit-quad counts:
    a blob count without a connected-component pass."""
    m = np.pad(mask.astype(np.int8), 1)
    q = m[:-1, :-1] + m[:-1, 1:] + m[1:, :-1] + m[1:, 1:]
    diag = ((m[:-1, :-1] == m[1:, 1:]) & (m[:-1, 1:] == m[1:, :-1])) & (
        m[:-1, :-1] != m[:-1, 1:]
    )
    return float(((q == 1).sum() - (q == 3).sum() + 2 * diag.sum()) / 4)


def _box_sum(a: np.ndarray, k: int) -> np.ndarray:
    """k×k box mean with edge padding through an integral image (fast)."""
    p = np.pad(a, k // 2, mode="edge").astype(np.float64)
    c = np.pad(p.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    n0, n1 = a.shape
    out = (
        c[k : k + n0, k : k + n1]
        - c[:n0, k : k + n1]
        - c[k : k + n0, :n1]
        + c[:n0, :n1]
    )
    return (out / (k * k)).astype(np.float32)


def _rank(a: np.ndarray, k: int, op: str) -> np.ndarray:
    """k×k max or min filter (edge padding), separable over shifted views."""
    fn = np.maximum if op == "max" else np.minimum
    r = k // 2
    p = np.pad(a, r, mode="edge")
    n0, n1 = a.shape
    rows = p[:, 0:n1]
    for d in range(1, k):
        rows = fn(rows, p[:, d : d + n1])
    out = rows[0:n0]
    for d in range(1, k):
        out = fn(out, rows[d : d + n0])
    return out


def _lbp_hist(z: np.ndarray, tol: float) -> list[float]:
    """Rotation-invariant uniform local binary patterns with a tolerance (flat
    neighbours count as equal): straight edges, corners, arcs and line ends give
    different patterns. 10 bins: 0..8 set bits for uniform codes, 9 for the rest."""
    c = z[1:-1, 1:-1]
    offs = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
    h, w = z.shape
    bits = [z[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx] > c + tol for dy, dx in offs]
    bits = np.stack(bits).astype(np.int8)
    ones = bits.sum(0)
    trans = np.abs(bits - np.roll(bits, 1, axis=0)).sum(0)
    code = np.where(trans <= 2, ones, 9)
    hist = np.bincount(code.ravel(), minlength=10)[:10].astype(np.float64)
    active = code != 0
    return list(hist[1:] / (active.sum() + 1.0))


def _shape_stats(image) -> np.ndarray:
    """v2 additions: shape count and shape kind, measured on a denoised thumbnail
    so that film grain does not read as detail.

    Blob counts of quantised tone regions (Euler number) and contrast-normalised
    edge density at two scales for "how many things"; corner density per edge
    pixel, block-wise orientation concentration (a polygon side has one
    orientation, an ellipse arc many), contour turning, isophote-curvature
    histogram, edge sharpness and local binary patterns for "curved versus
    straight"; mirror correlations; grain as the median filter's residual.
    """
    from PIL import Image as PILImage
    from PIL import ImageFilter

    rgb_im = to_rgb(image).resize((_PS_SIZE, _PS_SIZE), PILImage.Resampling.BILINEAR)
    den_im = rgb_im.filter(ImageFilter.MedianFilter(5))
    rgb = np.asarray(den_im, dtype=np.float32) / 255.0
    lum = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    sd = float(lum.std()) + 1e-3
    z = (lum - lum.mean()) / sd
    f: list[float] = []
    # Blob counts: tone quantised at per-image quantiles (contrast-invariant).
    for levels in (3, 5, 8):
        cuts = np.quantile(z, np.linspace(0, 1, levels + 1)[1:-1])
        lab = np.digitize(z, cuts)
        blobs = sum(abs(_euler4(lab == k)) for k in range(levels))
        f.append(float(np.log1p(blobs)))
        f.append(
            float((lab[:, 1:] != lab[:, :-1]).mean() + (lab[1:] != lab[:-1]).mean())
        )
    # Hue-region blobs.
    hsv = np.asarray(den_im.convert("HSV"), dtype=np.float32) / 255.0
    hq = (hsv[..., 0] * 6).astype(np.int32) % 6
    f.append(float(np.log1p(sum(abs(_euler4(hq == k)) for k in range(6)))))
    # Contrast-normalised edge density at two scales.
    for size in (_PS_SIZE, _PS_SIZE // 2):
        zz = z if size == _PS_SIZE else z.reshape(size, 2, size, 2).mean(axis=(1, 3))
        mag = np.hypot(*_grad(zz))
        f += [float((mag > t).mean()) for t in (0.1, 0.3, 0.6)]
        f.append(float(np.log(mag.mean() + 1e-4)))
    # Corners: Harris response local maxima per edge pixel, at two scales.
    gx, gy = _grad(z)
    mag = np.hypot(gx, gy)
    edge = _nonempty(mag > np.percentile(mag, 80))
    for win in (3, 5):
        jxx, jyy = _box_sum(gx * gx, win), _box_sum(gy * gy, win)
        jxy = _box_sum(gx * gy, win)
        tr = jxx + jyy + 1e-6
        det = jxx * jyy - jxy**2
        r = det / tr**2
        hr = det - 0.05 * tr**2
        nb = _rank(hr, 5, "max")
        peaks = (hr >= nb) & (hr > 0.02 * hr.max() + 1e-9)
        f.append(float(np.log1p(peaks.sum()) - np.log1p(edge.sum())))
        f += [float(r[edge].mean() * 4), float((r[edge] > 0.15).mean())]
        coh = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / tr
        f.append(float(coh[edge].mean()))
    # Orientation concentration per 16×16 block (mean resultant length of the
    # doubled angle, magnitude-weighted), averaged over blocks that hold edges.
    b = 16
    n = _PS_SIZE // b
    c2 = (gx**2 - gy**2).reshape(n, b, n, b).sum(axis=(1, 3))
    s2 = (2 * gx * gy).reshape(n, b, n, b).sum(axis=(1, 3))
    wsum = (gx**2 + gy**2).reshape(n, b, n, b).sum(axis=(1, 3)) + 1e-6
    conc = np.hypot(c2, s2) / wsum
    busy = _nonempty(wsum > np.percentile(wsum, 50))
    f += [float(conc[busy].mean()), float(np.percentile(conc[busy], 25))]
    b, n = 8, _PS_SIZE // 8
    c2 = (gx**2 - gy**2).reshape(n, b, n, b).sum(axis=(1, 3))
    s2 = (2 * gx * gy).reshape(n, b, n, b).sum(axis=(1, 3))
    wsum = (gx**2 + gy**2).reshape(n, b, n, b).sum(axis=(1, 3)) + 1e-6
    conc = np.hypot(c2, s2) / wsum
    busy = _nonempty(wsum > np.percentile(wsum, 60))
    f += [float(conc[busy].mean()), float(np.percentile(conc[busy], 25))]
    # Turning of the orientation along edges at two smoothing scales.
    for win in (3, 7):
        jxx, jyy = _box_sum(gx * gx, win), _box_sum(gy * gy, win)
        jxy = _box_sum(gx * gy, win)
        theta = np.arctan2(2 * jxy, jxx - jyy) / 2
        dx = np.abs(np.angle(np.exp(2j * (theta[:, 1:] - theta[:, :-1])))) / 2
        dy = np.abs(np.angle(np.exp(2j * (theta[1:] - theta[:-1])))) / 2
        f.append(float(dx[edge[:, 1:]].mean() + dy[edge[1:]].mean()))
    # Edge sharpness: 1-px gradient against the local 5×5 range (blur lowers it).
    rng5 = _rank(z, 5, "max") - _rank(z, 5, "min") + 1e-3
    sharp = (mag / rng5)[edge]
    f += [float(sharp.mean()), float(np.percentile(sharp, 90))]
    # Laplacian energy relative to gradient energy on the denoised image.
    lap = np.abs(
        4 * z[1:-1, 1:-1] - z[:-2, 1:-1] - z[2:, 1:-1] - z[1:-1, :-2] - z[1:-1, 2:]
    )
    f.append(float(lap.mean() / (mag.mean() + 1e-6)))
    # Mirror correlation (Pearson) left-right and top-bottom, denoised.
    for mir in (z[:, ::-1], z[::-1, :]):
        f.append(float((z * mir).mean()))
    # Grain: residual energy removed by the median filter, relative to contrast.
    raw = np.asarray(rgb_im, dtype=np.float32) / 255.0
    resid = raw @ np.array([0.299, 0.587, 0.114], dtype=np.float32) - lum
    f += [float(np.log(resid.std() + 1e-4)), float(np.log(resid.std() / sd + 1e-4))]
    # Isophote curvature histogram at strong edges, two smoothing scales: ~0 on
    # straight sides, ~1/radius on arcs, large at corners.
    for k in (3, 5):
        sm = _box_sum(_box_sum(z, k), k)
        lx, ly = _grad(sm)
        lxx, lxy = _grad(lx)
        _, lyy = _grad(ly)
        g = np.hypot(lx, ly)
        at = _nonempty(g > np.percentile(g, 85))
        kap = np.abs(lxx * ly**2 - 2 * lxy * lx * ly + lyy * lx**2) / (g**3 + 1e-6)
        hist, _ = np.histogram(kap[at], bins=(0, 0.03, 0.07, 0.15, 0.3, 0.6, np.inf))
        f += list(hist / (at.sum() + 1.0))
    # Local patterns at two scales and two tolerances.
    z2 = z.reshape(64, 2, 64, 2).mean(axis=(1, 3))
    for zz in (z, z2):
        for tol in (0.05, 0.2):
            f += _lbp_hist(zz, tol)
    out = np.asarray(f, dtype=np.float32)
    assert out.size == _SHAPE_DIM, out.size
    return out


_SHAPE_DIM = 7 + 8 + 8 + 4 + 2 + 2 + 1 + 2 + 2 + 12 + 36
PIXELSTATS_V2_DIM = PIXELSTATS_DIM + _SHAPE_DIM
_PIXELSTATS_DIMS = {"v1": PIXELSTATS_DIM, "v2": PIXELSTATS_V2_DIM}


class PixelStatsBackbone(Backbone):
    def embed(self, images: list) -> np.ndarray:
        if self.key.split(":")[-1] == "v2":
            feats = np.stack(
                [
                    np.concatenate([_pixelstats(im, fast=True), _shape_stats(im)])
                    for im in images
                ]
            )
        else:
            feats = np.stack([_pixelstats(im) for im in images])
        # Unit length like CLIP embeddings; the reward model standardises each
        # feature with training-set statistics stored in its checkpoint.
        norm = np.linalg.norm(feats, axis=1, keepdims=True) + 1e-8
        return (feats / norm).astype(np.float32)


def _factory(key: str) -> PixelStatsBackbone:
    version = key.split(":", 1)[1] if ":" in key else "v1"
    if version not in _PIXELSTATS_DIMS:
        raise ValueError(
            f"Unknown backbone '{key}' (pixelstats versions: "
            f"{', '.join(_PIXELSTATS_DIMS)})"
        )
    return PixelStatsBackbone(
        key=key, dim=_PIXELSTATS_DIMS[version], weights_loaded=True
    )


def register() -> None:
    backbone_register("pixelstats", _factory)
