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


class Timings(dict[str, float]):
    """Seconds per named step, in the order the steps ran; printed as the run's summary."""

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        raise_if_stopped()
        log.info("▶ %s ...", name)
        start = time.perf_counter()
        yield
        raise_if_stopped()
        self[name] = time.perf_counter() - start
        log.info("✔ %s (%.1fs)", name, self[name])

    def table(self) -> str:
        width = max((len(k) for k in self), default=4)
        rows = [f"{name:<{width}}  {secs:8.1f}s" for name, secs in self.items()]
        return "\n".join(rows + [f"{'total':<{width}}  {sum(self.values()):8.1f}s"])
