"""The parameters file `recsys tune` writes and `recsys train --params` reads.

It holds the chosen values of the searched settings only (``{"lightfm": {...}, "candidates": {...}, "ranker":
{...}}``), applied on top of whatever else is configured (threads, split, ...), and the search that chose them
(``tuning``: every trial, the best one, which parameters mattered), which training copies into both models'
metadata and the report. No optuna needed to read it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from recsys.settings import Settings, SettingsError, describe_errors

FORMAT = "recsys-params/1"
SECTIONS = ("lightfm", "candidates", "ranker")


def apply_params(settings: Settings, params: dict[str, dict[str, Any]], source: str = "parameters") -> Settings:
    """``settings`` with ``params``' sections applied and validated like any setting; an unknown section or name
    or a value that does not fit is a :class:`SettingsError` naming it."""
    updates = {}
    for section, values in params.items():
        if section not in SECTIONS:
            raise SettingsError(f"{source}: unknown section {section!r}; expected {', '.join(SECTIONS)}")
        current = getattr(settings, section)
        unknown = sorted(set(values) - set(type(current).model_fields))
        if unknown:
            raise SettingsError(f"{source}: unknown setting {section}.{unknown[0]}")
        try:
            updates[section] = type(current).model_validate({**current.model_dump(), **values})
        except ValidationError as exc:
            name = functools.partial(_dotted, section)
            raise SettingsError(f"{source}: invalid {describe_errors(exc, name)}") from None
    return settings.model_copy(update=updates)


def _dotted(section: str, loc: tuple[int | str, ...]) -> str:
    return f"{section}.{loc[0]}"


def write_params(path: Path, params: dict[str, dict[str, Any]], tuning: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"format": FORMAT, "params": params, "tuning": tuning}, indent=1, default=str))
    tmp.replace(path)
    return path


def read_params(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The parameters and the search history of a file `recsys tune` wrote; a :class:`SettingsError` otherwise."""
    try:
        content = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{path}: not a parameters file ({exc})") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise SettingsError(f"{path}: not a parameters file written by `recsys tune` (no \"format\": \"{FORMAT}\")")
    return content["params"], {**content.get("tuning", {}), "params_file": str(path)}
