"""A dependency-free progress line for the data command lines (stderr, ~2 updates/s)."""

from __future__ import annotations

import sys
import time


class Progress:
  """``with Progress(total, "Checking") as bar: bar.update(n)`` prints count, rate and ETA."""

  def __init__(self, total: int, label: str, unit: str = "records", stream=None,
               min_interval_s: float = 0.5):
    self.total = total
    self.label = label
    self.unit = unit
    self.done = 0
    self._stream = stream or sys.stderr
    self._start = time.perf_counter()
    self._last = 0.0
    self._min_interval = min_interval_s

  def update(self, count: int = 1) -> None:
    self.done += count
    now = time.perf_counter()
    if now - self._last >= self._min_interval:
      self._last = now
      self._print(now)

  def _print(self, now: float, end: str = "\r") -> None:
    elapsed = max(now - self._start, 1e-9)
    rate = self.done / elapsed
    percent = 100.0 * self.done / self.total if self.total else 100.0
    eta = (self.total - self.done) / rate if rate > 0 else float("inf")
    eta_text = f"{eta:.0f}s" if eta != float("inf") else "?"
    self._stream.write(f"{self.label}: {self.done}/{self.total} {self.unit} ({percent:5.1f}%) "
                       f"{rate:,.0f}/s, ETA {eta_text}   {end}")
    self._stream.flush()

  def __enter__(self) -> "Progress":
    return self

  def __exit__(self, *exc) -> None:
    self._print(time.perf_counter(), end="\n")
