"""Latency histograms that merge by addition: what RED rollups keep instead of every duration.

Bins grow by 2**(1/8) (about 9%), from 1 microsecond up: a percentile read back from a histogram is within
about 4.5% of the exact one, whatever the range, and a day of one operation costs at most a few hundred
numbers per minute bucket.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

BINS_PER_DOUBLING = 8
_FLOOR_NS = 1_000


def bin_of(duration_ns: int) -> int:
    if duration_ns <= _FLOOR_NS:
        return 0
    return int(math.log2(duration_ns / _FLOOR_NS) * BINS_PER_DOUBLING) + 1


def bin_value_ns(index: int) -> float:
    """The geometric middle of a bin: the value a percentile that falls into it reads as."""
    if index == 0:
        return float(_FLOOR_NS)
    return _FLOOR_NS * 2 ** ((index - 0.5) / BINS_PER_DOUBLING)


def encode(histogram: Mapping[int, int]) -> str:
    return json.dumps({str(k): v for k, v in sorted(histogram.items())}, separators=(",", ":"))


def decode(text: str) -> Counter[int]:
    return Counter({int(k): int(v) for k, v in json.loads(text).items()})


# What turns encoded histograms, concatenated, into one JSON array of numbers: bin, count, bin, count, ...
_AS_NUMBERS = str.maketrans({"{": " ", "}": ",", '"': " ", ":": ","})


def merge_encoded(concatenated: str | None) -> Counter[int]:
    """Histograms as :func:`encode` writes them, concatenated (SQL's ``group_concat(histogram, '')``),
    merged into one.

    A range's histograms are thousands of small JSON objects: parsing them as one array of numbers, then
    adding the counts bin by bin, costs a fraction of decoding each (a day of a service graph: 0.2 s
    instead of 1.5 s).
    """
    if not concatenated:
        return Counter()
    numbers = json.loads("[" + concatenated.replace("{}", "").translate(_AS_NUMBERS).rstrip(", ") + "]")
    merged: dict[int, int] = {}
    pairs = iter(numbers)
    for index, count in zip(pairs, pairs, strict=True):
        merged[index] = merged.get(index, 0) + count
    return Counter(merged)


def merge(histograms: Iterable[Mapping[int, int]]) -> Counter[int]:
    total: Counter[int] = Counter()
    for histogram in histograms:
        total.update(histogram)
    return total


def percentile_ms(histogram: Mapping[int, int], fraction: float) -> float | None:
    """The ``fraction`` percentile (0.5, 0.95, 0.99) in milliseconds, or None for an empty histogram."""
    return percentiles_ms(histogram, (fraction,))[0]


def percentiles_ms(histogram: Mapping[int, int], fractions: Sequence[float]) -> list[float | None]:
    """Several percentiles (``fractions`` in ascending order) in milliseconds, in one pass over the
    sorted bins; Nones for an empty histogram."""
    count = sum(histogram.values())
    if not count:
        return [None] * len(fractions)
    ranks = [max(1, math.ceil(fraction * count)) for fraction in fractions]
    found: list[float | None] = []
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        while len(found) < len(ranks) and seen >= ranks[len(found)]:
            found.append(bin_value_ns(index) / 1e6)
        if len(found) == len(ranks):
            return found
    raise AssertionError("unreachable: ranks never exceed the count")
