"""Clear progress logs with timings for every step that can take more than a moment."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from recsys.stopping import raise_if_stopped

log = logging.getLogger("recsys")


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-5s %(message)s", datefmt="%H:%M:%S")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 90 else f"{seconds / 60:.0f} min"


class Timings(dict[str, float]):
    """Seconds per named step, in the order the steps ran; printed as the run's summary.

    With a plan (:meth:`plan`: each remaining step's expected cost, in any unit), every step's log line also says
    how much of the whole run is left: the remaining steps' cost at the pace of the planned steps done so far, so
    a slower machine (or a busy one) stretches the estimate as it goes. A step answered from a cache
    (:meth:`from_cache`) sets no pace: its seconds say nothing about how fast the remaining steps will compute."""

    def __init__(self) -> None:
        super().__init__()
        self._expected: dict[str, float] = {}
        self._done: dict[str, float] = {}  # planned step -> its seconds
        self._cached: set[str] = set()  # planned steps answered from a cache
        self._running: str | None = None  # the planned step in progress

    def plan(self, expected: dict[str, float]) -> None:
        """Expected cost of each planned step by key (the ``key`` its :meth:`step` is given)."""
        self._expected = dict(expected)

    def from_cache(self) -> None:
        """The step in progress is being answered from a cache: it is left out of the pace."""
        if self._running is not None:
            self._cached.add(self._running)

    def eta(self) -> float | None:
        """Seconds left for the planned steps not done yet; None before the first computed one is done."""
        paced = {k: seconds for k, seconds in self._done.items() if k not in self._cached}
        done_cost = sum(self._expected[k] for k in paced)
        if done_cost <= 0:
            return None
        pace = sum(paced.values()) / done_cost
        return pace * sum(cost for k, cost in self._expected.items() if k not in self._done)

    def _progress(self) -> str:
        if not self._expected:
            return ""
        left = self.eta()
        where = f"step {len(self._done) + 1} of {len(self._expected)}"
        return f" [{where}, about {_duration(left)} of the run left]" if left is not None else f" [{where}]"

    @contextmanager
    def step(self, name: str, key: str | None = None) -> Iterator[None]:
        raise_if_stopped()
        log.info("▶ %s ...%s", name, self._progress() if key in self._expected else "")
        start = time.perf_counter()
        self._running = key if key in self._expected else None
        try:
            yield
        finally:
            self._running = None
        raise_if_stopped()
        self[name] = time.perf_counter() - start
        left = None
        if key in self._expected:
            self._done[key] = self[name]
            left = self.eta()
        if left is not None:
            log.info("✔ %s (%.1fs; about %s of the run left)", name, self[name], _duration(left))
        else:
            log.info("✔ %s (%.1fs)", name, self[name])

    def table(self) -> str:
        width = max((len(k) for k in self), default=4)
        rows = [f"{name:<{width}}  {secs:8.1f}s" for name, secs in self.items()]
        return "\n".join(rows + [f"{'total':<{width}}  {sum(self.values()):8.1f}s"])
