"""Inline SVG charts: server-rendered, no JavaScript, no CDN, readable on a tablet.

Every function returns markup marked safe; all text that goes into it is escaped
here. Charts scale with their container (viewBox, width 100%)."""

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

W, H = 640, 220
PAD_L, PAD_R, PAD_T, PAD_B = 44, 12, 12, 34


def _frame(body: str, title: str, w: int = W, h: int = H) -> SafeString:
    return mark_safe(
        f'<svg class="chart" viewBox="0 0 {w} {h}" role="img" '
        f'aria-label="{escape(title)}" preserveAspectRatio="xMidYMid meet">'
        f"<title>{escape(title)}</title>{body}</svg>"
    )


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000):
        if v <= step * 4:
            return step * 4 if v > step * 2 else max(v, step * 2)
    return v * 1.1


def _y_axis(max_v: float, ticks: int = 4, fmt=lambda v: f"{v:g}") -> str:
    out = []
    inner_h = H - PAD_T - PAD_B
    for i in range(ticks + 1):
        v = max_v * i / ticks
        y = PAD_T + inner_h - inner_h * i / ticks
        out.append(
            f'<line class="grid" x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" '
            f'y2="{y:.1f}"/><text class="tick" x="{PAD_L - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end">{escape(fmt(round(v, 2)))}</text>'
        )
    return "".join(out)


def bars(
    values: list[tuple[str, float]], *, title: str, highlight_last: bool = False
) -> SafeString:
    """Vertical bars with a label under each (labels thinned when crowded)."""
    if not values:
        return _frame('<text x="20" y="40">No data yet</text>', title)
    max_v = _nice_max(max(v for _, v in values))
    inner_w, inner_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    step = inner_w / len(values)
    every = max(1, len(values) // 16)
    parts = [_y_axis(max_v)]
    for i, (label, v) in enumerate(values):
        bh = inner_h * v / max_v
        x = PAD_L + i * step + step * 0.1
        cls = "bar hi" if highlight_last and i == len(values) - 1 else "bar"
        parts.append(
            f'<rect class="{cls}" x="{x:.1f}" y="{PAD_T + inner_h - bh:.1f}" '
            f'width="{step * 0.8:.1f}" height="{bh:.1f}">'
            f"<title>{escape(label)}: {v:g}</title></rect>"
        )
        if i % every == 0:
            parts.append(
                f'<text class="tick" x="{x + step * 0.4:.1f}" y="{H - PAD_B + 14}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    return _frame("".join(parts), title)


def _scatter_ticks(px, py, y_ticks: list[float], x_ticks: list[float]) -> list[str]:
    """Horizontal grid lines with their labels, and the x axis's labels."""
    parts = [
        f'<line class="grid" x1="{PAD_L}" x2="{W - PAD_R}" y1="{py(yv):.1f}" '
        f'y2="{py(yv):.1f}"/><text class="tick" x="{PAD_L - 6}" '
        f'y="{py(yv) + 4:.1f}" text-anchor="end">{yv:.2g}</text>'
        for yv in y_ticks
    ]
    parts += [
        f'<text class="tick" x="{px(xv):.1f}" y="{H - PAD_B + 14}" '
        f'text-anchor="middle">{xv:.3g}</text>'
        for xv in x_ticks
    ]
    return parts


def scatter(
    points: list[tuple[float, float, str]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    diagonal: bool = False,
    x_ticks: list[float] | None = None,
) -> SafeString:
    """Points (x, y, tooltip); optional y = x line for predicted vs actual, and
    the x axis's tick values (default: five evenly spaced)."""
    if not points:
        return _frame('<text x="20" y="40">No data yet</text>', title)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = x_range or (min(xs), max(xs) or 1)
    y0, y1 = y_range or (min(ys), max(ys))
    if x1 <= x0:
        x1 = x0 + 1
    if y1 <= y0:
        y1 = y0 + 1
    inner_w, inner_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def px(x):
        return PAD_L + inner_w * (x - x0) / (x1 - x0)

    def py(y):
        return PAD_T + inner_h - inner_h * (y - y0) / (y1 - y0)

    parts = _scatter_ticks(
        px,
        py,
        [y0 + (y1 - y0) * i / 4 for i in range(5)],
        x_ticks or [x0 + (x1 - x0) * i / 4 for i in range(5)],
    )
    if diagonal:
        lo, hi = max(x0, y0), min(x1, y1)
        parts.append(
            f'<line class="ref" x1="{px(lo):.1f}" y1="{py(lo):.1f}" '
            f'x2="{px(hi):.1f}" y2="{py(hi):.1f}"/>'
        )
    for x, y, tip in points:
        parts.append(
            f'<circle class="pt" cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5">'
            f"<title>{escape(tip)}</title></circle>"
        )
    parts.append(
        f'<text class="axis" x="{PAD_L + inner_w / 2:.0f}" y="{H - 4}" '
        f'text-anchor="middle">{escape(x_label)}</text>'
        f'<text class="axis" x="12" y="{PAD_T + inner_h / 2:.0f}" '
        f'transform="rotate(-90 12 {PAD_T + inner_h / 2:.0f})" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    return _frame("".join(parts), title)


def line(
    points: list[tuple[str, float | None]],
    *,
    title: str,
    y_range: tuple[float, float] = (0.0, 1.0),
) -> SafeString:
    """A metric across versions: labelled points joined by a line."""
    pts = [(label, v) for label, v in points if v is not None]
    if not pts:
        return _frame('<text x="20" y="40">No data yet</text>', title)
    y0, y1 = y_range
    inner_w, inner_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    step = inner_w / max(len(pts) - 1, 1)

    def py(v):
        return PAD_T + inner_h - inner_h * (v - y0) / (y1 - y0)

    parts = [
        f'<line class="grid" x1="{PAD_L}" x2="{W - PAD_R}" y1="{py(y):.1f}" '
        f'y2="{py(y):.1f}"/><text class="tick" x="{PAD_L - 6}" y="{py(y) + 4:.1f}" '
        f'text-anchor="end">{y:.2g}</text>'
        for y in (y0 + (y1 - y0) * i / 4 for i in range(5))
    ]
    coords = [(PAD_L + i * step, py(v)) for i, (_, v) in enumerate(pts)]
    parts.append(
        '<polyline class="series" points="'
        + " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        + '"/>'
    )
    for (label, v), (x, y) in zip(pts, coords, strict=True):
        parts.append(
            f'<circle class="pt" cx="{x:.1f}" cy="{y:.1f}" r="4">'
            f"<title>{escape(label)}: {v:.3f}</title></circle>"
            f'<text class="tick" x="{x:.1f}" y="{H - PAD_B + 14}" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
    return _frame("".join(parts), title)
