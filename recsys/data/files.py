"""Reading published delimited files with errors a user can act on.

Real datasets arrive as files someone downloaded and unpacked by hand, so the usual failures are a wrong folder,
a truncated or re-saved file, or a different separator. Each of those is turned into a :class:`DataError` that
names the file and says what looks wrong, instead of a pandas traceback.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from recsys.data.schema import DataError

_SEPARATORS = ["::", "\t", "|", ",", ";"]
_PLACEHOLDER = "\x1f"  # ASCII unit separator: stands in for a multi-char separator so the fast C parser can be used


def _sep_hint(path: Path, sep: str, encoding: str) -> str:
    """Guess which separator the first line really uses, to make the error message actionable."""
    try:
        with path.open(encoding=encoding, errors="replace") as handle:
            first = handle.readline()
    except OSError:
        return ""
    counts = {s: first.count(s) for s in _SEPARATORS if s != sep and s not in sep}
    best = max(counts, key=lambda s: counts[s], default=None)
    return f" (its first line contains {counts[best]} {best!r})" if best and counts[best] else ""


def _wrong_sep(path: Path, sep: str, encoding: str, problem: str, note: str = "") -> DataError:
    hint = _sep_hint(path, sep, encoding)
    return DataError(f"{path}: {problem}; looks like the separator is not {sep!r}{hint}{note}")


def _bad_byte(path: Path, encoding: str) -> str:
    """Line and column of the first byte of ``path`` that is not ``encoding``: pandas reports an offset within
    the chunk it was decoding, which points nowhere in the file."""
    raw = path.read_bytes()
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        column = len(raw[line_start:exc.start].decode(encoding, "replace")) + 1
        return f"line {line}, column {column}"
    return "an unknown position"


def read_table(path: Path, *, sep: str, names: list[str] | None = None, header: bool = True,
               encoding: str = "utf-8", required: list[str] | None = None,
               quoted: bool | None = None) -> pd.DataFrame:
    """Read a delimited text file, raising :class:`DataError` naming ``path`` on any problem.

    ``names`` (with ``header=False``) is the exact field list of a headerless format: every line must have that
    many fields. ``required`` lists columns a headed file must contain. ``quoted`` enables CSV quoting; by default
    only for ``sep=","`` because tab/pipe/'::' formats (MovieLens) never quote and titles may contain quotes.
    Only empty fields become NaN, so titles such as "NA" or "None" survive as text.
    """
    path = Path(path)
    _check_file(path)
    frame = _parse(path, sep, encoding, header, quoted if quoted is not None else sep == ",")
    if names is not None:
        if frame.shape[1] != len(names):
            raise _wrong_sep(path, sep, encoding,
                             f"lines have {frame.shape[1]} field(s), expected {len(names)} ({', '.join(names)})")
        frame.columns = names
    elif header:
        frame.columns = [str(c).strip() for c in frame.columns]
    _check_columns(frame, path, sep, encoding, required or [])
    if frame.empty:
        raise DataError(f"{path}: the table has no rows" + (" (only a header)" if header else ""))
    return frame


def _check_file(path: Path) -> None:
    if not path.is_file():
        where = path.parent if path.parent.is_dir() else f"{path.parent} (the folder does not exist either)"
        raise DataError(f"{path}: file not found; expected '{path.name}' in folder {where}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")


def _quoting(quoted: bool) -> Literal[0, 3]:
    """csv.QUOTE_MINIMAL or csv.QUOTE_NONE, spelt as pandas' stubs want them (the csv module types them as int)."""
    return 0 if quoted else 3


def _parse(path: Path, sep: str, encoding: str, header: bool, quoted: bool) -> pd.DataFrame:
    """pandas' parse of the file; a multi-character separator is swapped for a one-byte placeholder first, so the
    fast C parser can read it."""
    source: Path | io.StringIO = path
    parse_sep = sep
    engine: Literal["c", "python"] = "c"
    try:
        if len(sep) > 1:
            text = path.read_text(encoding=encoding)
            if _PLACEHOLDER not in text:
                source, parse_sep = io.StringIO(text.replace(sep, _PLACEHOLDER)), _PLACEHOLDER
            else:  # the file holds the placeholder byte itself: fall back to the slower regex split
                source, parse_sep, engine = io.StringIO(text), re.escape(sep), "python"
        return pd.read_csv(
            source, sep=parse_sep, engine=engine, header=0 if header else None, encoding=encoding,
            quoting=_quoting(quoted), keep_default_na=False, na_values=[""],
            low_memory=engine != "c",  # the C parser infers types over the whole file; python takes only the default
        )
    except UnicodeDecodeError:
        raise DataError(
            f"{path}: not valid {encoding} text (bad byte at {_bad_byte(path, encoding)}); "
            f"re-save the file as {encoding} or check you picked the right dataset"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty (no header and no rows)") from None
    except pd.errors.ParserError as exc:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        problem = (f"line {found[2]} has {found[3]} fields, expected {found[1]}" if found
                   else f"could not be parsed ({str(exc).strip()})")
        raise _wrong_sep(path, sep, encoding, problem, f", or a value on that line contains {sep!r}") from None


def _check_columns(frame: pd.DataFrame, path: Path, sep: str, encoding: str, required: list[str]) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing and frame.shape[1] == 1 and len(required) > 1:
        raise _wrong_sep(path, sep, encoding, f"parsed into a single column {list(frame.columns)}")
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")


def to_number(frame: pd.DataFrame, column: str, path: Path, *, integer: bool = False,
              allow_missing: bool = False) -> pd.Series:
    """Column ``column`` as numbers, or a :class:`DataError` naming the file, the column and example bad values.

    Loaders call this before filtering rows, so a bad value is reported even if its row would be dropped.
    """
    values = frame[column]
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() & values.notna()
    if integer:
        bad |= numeric.notna() & (numeric != np.floor(numeric))
    if bad.any():
        examples = values[bad].astype(str).head(3).tolist()
        first = int(np.flatnonzero(bad.to_numpy())[0]) + 1
        kind = "integers" if integer else "numbers"
        raise DataError(f"{path}: column '{column}' must hold {kind}; found {examples} (first at data row {first})")
    if not allow_missing and numeric.isna().any():
        first = int(np.flatnonzero(numeric.isna().to_numpy())[0]) + 1
        raise DataError(f"{path}: column '{column}' has {int(numeric.isna().sum())} empty value(s) "
                        f"(first at data row {first}); a line may be truncated")
    return numeric
