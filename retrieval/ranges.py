"""Cutting ``count`` rows into contiguous ranges: the one rule every split of rows follows
(a segment into serving shards, the evaluation's videos into Ray tasks)."""

from __future__ import annotations


def even_ranges(count: int, parts: int, rotate: int = 0) -> list[tuple[int, int]]:
    """``parts`` contiguous ``(lo, hi)`` ranges covering ``range(count)`` once, in order, whose
    sizes differ by at most one. The ``count % parts`` larger ranges are parts ``rotate``,
    ``rotate + 1``, ... (mod ``parts``), so that splitting many small counts with a different
    ``rotate`` each does not always load the first parts."""
    base, extra = divmod(count, parts)
    ranges, lo = [], 0
    for i in range(parts):
        size = base + ((i - rotate) % parts < extra)
        ranges.append((lo, lo + size))
        lo += size
    return ranges
