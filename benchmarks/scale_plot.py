"""Every cost of ``benchmarks/scale.py`` against the number of ratings, as one SVG
of small panels (log x axis; the target as a dashed line). No matplotlib: it is
not a dependency of the project, and a few lines of SVG are enough."""

from __future__ import annotations

import json
import math
from pathlib import Path

PANELS = [
    # (title, kind, x field, value getter, unit, target)
    ("claim p95, server", "fill", "ratings_before", "claim_p95_ms", "ms", 20),
    ("submit p95, server", "fill", "ratings_before", "submit_p95_ms", "ms", 20),
    ("claim p95, far-ahead annotator", "fill", "ratings_before", "probe", "ms", 20),
    ("CPU per rating (web + db)", "fill", "ratings_before", "cpu", "ms", None),
    ("dashboard, slowest page p95", "fill", "ratings_after", "dashboard", "ms", 300),
    ("integrity check", "fill", "ratings_after", "integrity_s", "s", 10),
    ("Krippendorff's alpha", "fill", "ratings_after", "alpha_s", "s", None),
    ("export (Parquet, no images)", "fill", "ratings_after", "export_s", "s", 60),
    ("export peak RSS", "fill", "ratings_after", "export_rss_mb", "MB", 500),
    ("training run (wall)", "train", "train_ratings", "train_s", "s", 120),
    ("training run (CPU)", "train", "train_ratings", "train_cpu_s", "s", 120),
    ("training peak RSS", "train", "train_ratings", "train_rss_mb", "MB", 4096),
    ("predict 5,000 images p50", "train", "train_ratings", "predict_p50_ms", "ms", 3),
]
COLOURS = {"S": "#1f77b4", "M": "#ff7f0e", "L": "#2ca02c", "T": "#9467bd"}


def value(rec: dict, key: str):
    if key == "probe":
        return (rec.get("probe") or {}).get("far_ahead", {}).get("claim_p95_ms")
    if key == "cpu":
        cpu = rec.get("cpu_ms_per_rating") or {}
        return cpu.get("web", cpu.get("gunicorn", 0)) + cpu["postgres"] if cpu else None
    if key == "dashboard":
        pages = rec.get("dashboard") or {}
        return max((p["p95"] for p in pages.values()), default=None)
    return rec.get(key)


def _panel(recs, title, kind, xkey, key, unit, target, ox, oy, w, h) -> list[str]:
    pts = [
        (rec[xkey], value(rec, key), rec.get("size", ""))
        for rec in recs
        if rec.get("kind") == kind and rec.get(xkey) and value(rec, key) is not None
    ]
    out = [
        f'<g transform="translate({ox},{oy})">',
        f'<text x="0" y="-6" font-size="12">{title} ({unit})</text>',
        f'<rect width="{w}" height="{h}" fill="none" stroke="#999"/>',
    ]
    if not pts:
        return out + ['<text x="10" y="20" font-size="11">not measured</text></g>']
    xs = [math.log10(p[0]) for p in pts]
    x0, x1 = min(xs) - 0.2, max(xs) + 0.2
    ymax = max([p[1] for p in pts] + ([target] if target else [])) * 1.15 or 1

    def sx(x):
        return (math.log10(x) - x0) / (x1 - x0) * w

    def sy(y):
        return h - y / ymax * h

    if target:
        out.append(
            f'<line x1="0" x2="{w}" y1="{sy(target):.1f}" y2="{sy(target):.1f}" '
            'stroke="#d62728" stroke-dasharray="4 3"/>'
        )
    for decade in range(math.ceil(x0), math.floor(x1) + 1):
        x = sx(10**decade)
        out.append(
            f'<text x="{x:.1f}" y="{h + 12}" font-size="9" text-anchor="middle">'
            f"1e{decade}</text>"
        )
    out.append(f'<text x="-4" y="8" font-size="9" text-anchor="end">{ymax:.3g}</text>')
    out.append(f'<text x="-4" y="{h}" font-size="9" text-anchor="end">0</text>')
    for x, y, size in pts:
        colour = COLOURS.get(size, "#333")
        out.append(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}">'
            f"<title>{size} {x} ratings: {y:.3g} {unit}</title></circle>"
        )
    return out + ["</g>"]


def draw(results: Path, svg: Path) -> None:
    recs = [json.loads(line) for line in results.read_text().splitlines() if line]
    cols, w, h, gap = 3, 260, 150, 60
    rows = -(-len(PANELS) // cols)
    width, height = cols * (w + gap) + gap, rows * (h + gap) + gap + 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif">',
        '<rect width="100%" height="100%" fill="white"/>',
        '<text x="10" y="16" font-size="13">Cost against ratings in the study '
        "(x: ratings, log scale; dashed: target; colour: S / M / L)</text>",
    ]
    for n, panel in enumerate(PANELS):
        ox, oy = gap + (n % cols) * (w + gap), gap + 10 + (n // cols) * (h + gap)
        out += _panel(recs, *panel, ox, oy, w, h)
    out.append("</svg>")
    svg.write_text("\n".join(out) + "\n")
