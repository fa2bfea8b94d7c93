"""The guard every patch of BentoML's or uvicorn's internals shares: it holds only for the versions it was read
against, so on any other it is not applied, and the log says what is lost and where to look.

Example
-------
>>> written_for("recsys.serving.example", {"bentoml": "0.0.1"}, lost="nothing", check="the docs")
False
"""

from __future__ import annotations

import logging
from importlib.metadata import version

log = logging.getLogger("recsys")


def written_for(patch: str, versions: dict[str, str], lost: str, check: str) -> bool:
    """Whether the installed packages are the ``versions`` the module ``patch`` was written against; if not, a
    warning saying what is ``lost`` without the patch and what to ``check`` before updating it."""
    found = {name: version(name) for name in versions}
    if found == versions:
        return True
    log.warning("recsys: %s installed, but %s was written for %s and is NOT applied: %s. Check %s, then update %s.",
                found, patch, versions, lost, check, patch)
    return False
