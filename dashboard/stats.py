"""Small interval helpers for the dashboard (pure functions, no numpy)."""

from math import atanh, sqrt, tanh

Z95 = 1.959963984540054


def wilson(p: float | None, n: int) -> tuple[float, float] | None:
    """95% Wilson interval of a proportion ``p`` observed over ``n`` trials.

    Pairwise accuracy is a proportion of image pairs, but pairs sharing images
    are not independent: the number of held-out *images* is used as ``n``,
    which gives a conservative (wider) interval than the number of pairs."""
    if p is None or n < 2:
        return None
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def fisher(r: float | None, n: int) -> tuple[float, float] | None:
    """95% interval of a correlation by Fisher's z (needs n > 3)."""
    if r is None or n <= 3:
        return None
    r = max(min(r, 0.999999), -0.999999)
    z, se = atanh(r), 1 / sqrt(n - 3)
    return tanh(z - Z95 * se), tanh(z + Z95 * se)


def mean_interval(values: list[float]) -> tuple[float, float, float] | None:
    """Mean and 95% normal interval of the mean over annotators."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, m, m
    sd = sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    half = Z95 * sd / sqrt(len(xs))
    return m, m - half, m + half


def stored_interval(low: float | None, high: float | None) -> tuple | None:
    """An interval computed at training time (e.g. the MAE's bootstrap), if any."""
    return None if low is None or high is None else (low, high)
