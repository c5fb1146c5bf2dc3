"""Numbers from samples: latency percentiles and the median/spread of repeated runs.

Only arithmetic lives here; what is measured and how runs are repeated is the runner's job
(`bench/runner.py`), and how figures are shown is the report's (`bench/report.py`).
"""

import math
import statistics
from array import array
from collections.abc import Sequence

# The percentiles every latency result carries; report.py draws its curves from these.
PERCENTILES = (50.0, 90.0, 99.0, 99.9, 99.99, 100.0)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) of already sorted values, nearest-rank method.

    Nearest rank (no interpolation) so that p100 is the true maximum and a reported p99.9
    is a latency some message really had.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile {p} is outside 0..100")
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def latency_summary(samples_us: Sequence[float] | array) -> dict:
    """p50/p90/p99/p99.9/p99.99/max and count of latency samples in microseconds."""
    if len(samples_us) == 0:
        return {"count": 0}
    ordered = sorted(samples_us)
    out = {"count": len(ordered), "mean": statistics.fmean(ordered)}
    for p in PERCENTILES:
        out[percentile_key(p)] = percentile(ordered, p)
    return out


def percentile_key(p: float) -> str:
    """'p50', 'p99.9', 'max' - the key a percentile is stored under in result JSON."""
    if p == 100.0:
        return "max"
    return "p" + (f"{p:g}")


def spread(values: Sequence[float]) -> dict:
    """Median, min and max of one figure over repeated runs (None values are runs that failed)."""
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(present), "min": min(present), "max": max(present),
            "n": len(present)}


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b
