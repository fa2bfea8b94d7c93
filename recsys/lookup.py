"""Id look-ups in sorted id arrays: the one ``searchsorted`` every model and feature table answers with."""

from __future__ import annotations

import numpy as np


def find_sorted(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each of ``ids`` in ``sorted_ids`` and whether it is there; where it is not, the position is
    some valid index (0 for an empty ``sorted_ids`` too), to be masked by the caller.

    Examples
    --------
    >>> find_sorted(np.array([3, 5, 9]), np.array([5, 4, 9, 12]))
    (array([1, 1, 2, 2]), array([ True, False,  True, False]))
    """
    ids = np.asarray(ids, dtype=np.int64)
    if len(sorted_ids) == 0:
        return np.zeros(len(ids), np.int64), np.zeros(len(ids), bool)
    pos = np.searchsorted(sorted_ids, ids).clip(max=len(sorted_ids) - 1)
    return pos, sorted_ids[pos] == ids
