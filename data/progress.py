"""Progress lines for the data and evaluation command lines: tqdm on stderr.

    with progress_bar(total, "Checking") as bar:
        bar.update(n)          # count, rate and ETA, refreshed ~2 times a second
"""

from __future__ import annotations

import sys

import tqdm


def progress_bar(total: int, label: str, unit: str = "records", stream=None,
                 min_interval_s: float = 0.5, show: bool = True) -> tqdm.tqdm:
  """A tqdm bar on `stream` (default stderr); `show=False` prints nothing."""
  return tqdm.tqdm(total=total, desc=label, unit=unit,
                   file=stream or sys.stderr, mininterval=min_interval_s,
                   disable=not show, dynamic_ncols=True)
