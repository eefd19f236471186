"""Reading the official text files of rating data sets, with one-line errors.

Every problem becomes one ``DataError`` naming the file, the line (1-based, as an editor shows it) and the column,
and what was expected.  Large numeric tables go through pandas' C parser; only when it objects (or a value fails a
check) is the file scanned line by line, to name the first bad line exactly.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Callable, Collection, Optional, Sequence

import numpy as np
import pandas as pd

from metarec_pl.data.types import DataError


def require(root: Optional[str], name: str, what: str = "", hint: str = "") -> Path:
    """``root/name`` (or ``name`` if absolute); a one-line error if it is missing."""
    if root is None and not Path(name).is_absolute():
        raise DataError(f"{what or name}: no data folder given (set --data.root to the folder holding {name})")
    path = Path(root or "") / name
    if not path.is_file():
        raise DataError(f"{path}: file not found{' (' + what + ')' if what else ''}{'; ' + hint if hint else ''}")
    return path


def read_text(path: Path, encodings: Sequence[str] = ("utf-8",)) -> str:
    """The file decoded with the first encoding that fits; NUL bytes or no fitting encoding is an error."""
    raw = path.read_bytes()
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: NUL byte found; expected a text file in {' or '.join(encodings)}"
                        " (UTF-16 or binary files are not read)")
    error: Optional[UnicodeDecodeError] = None
    for encoding in encodings:
        try:
            text = raw.decode(encoding)
            return text[1:] if text.startswith("\ufeff") else text
        except UnicodeDecodeError as exc:
            error = error or exc
    assert error is not None
    line = raw[: error.start].count(b"\n") + 1
    raise DataError(f"{path}: line {line}: byte {raw[error.start]:#x} is not valid {' or '.join(encodings)}; "
                    f"expected text in {' or '.join(encodings)}")


def _iter_lines(text: str):
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        yield text[start:end]
        start = end + 1


def lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) for every non-blank line."""
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def split_rows(path: Path, text: str, sep: str, ncols: Collection[int], layout: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line; each line must have one of ``ncols`` fields."""
    out = []
    for n, line in lines(text):
        fields = line.split(sep)
        if len(fields) not in ncols:
            raise DataError(f"{path}: line {n}: found {len(fields)} field(s) separated by {sep!r}; expected "
                            f"{' or '.join(map(str, sorted(ncols)))}: {layout}")
        out.append((n, fields))
    if not out:
        raise DataError(f"{path}: the file is empty; expected lines of {layout}")
    return out


def to_int(path: Path, line: int, column: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{path}: line {line}, column {column}: {value!r} is not an integer") from None


Check = Callable[[int, str, str], Optional[str]]  # (field index, column name, value) -> complaint or None


def numeric_check(lo: Optional[float] = None, hi: Optional[float] = None, column: Optional[str] = None) -> Check:
    """Every field must be a number; the field named ``column`` must also lie in [lo, hi]."""
    def check(i: int, name: str, value: str) -> Optional[str]:
        try:
            x = float(value)
        except ValueError:
            return f"{value!r} is not a number"
        if math.isnan(x) or math.isinf(x):
            return f"{value!r} is not a finite number"
        if name == column and ((lo is not None and x < lo) or (hi is not None and x > hi)):
            return f"{value} is outside the rating range [{lo}, {hi}]"
        return None
    return check


def scan(path: Path, text: str, sep: str, ncols: Collection[int], names: Sequence[str], layout: str,
         check: Check) -> None:
    """Slow path: find the first bad line and raise its one-line error."""
    for n, fields in split_rows(path, text, sep, ncols, layout):
        for i, value in enumerate(fields):
            complaint = check(i, names[i], value.strip())
            if complaint:
                raise DataError(f"{path}: line {n}, column {names[i]}: {complaint}; expected {layout}")


def numeric_table(path: Path, text: str, sep: str, names: Sequence[str], ncols: Collection[int], layout: str,
                  rating_range: Optional[tuple[float, float]] = None) -> dict[str, np.ndarray]:
    """Columns of a table of numbers (``names[:k]`` for a file with k fields, k in ``ncols``).

    ``rating_range`` checks the column named ``rating``.  The first bad line is named in the error.
    """
    lo, hi = rating_range or (None, None)
    check = numeric_check(lo, hi, "rating")
    first = next((line for line in _iter_lines(text) if line.strip()), None)
    if first is None:
        raise DataError(f"{path}: the file is empty; expected lines of {layout}")
    k = len(first.split(sep))
    if k not in ncols:
        scan(path, text, sep, ncols, names, layout, check)
    body = text.replace(sep, "\t") if len(sep) > 1 else text
    try:
        frame = pd.read_csv(io.StringIO(body), sep="\t" if len(sep) > 1 else sep, header=None, names=list(names[:k]),
                            dtype=np.float64, engine="c", skip_blank_lines=True)
    except (ValueError, pd.errors.ParserError):
        scan(path, text, sep, [k], names, layout, check)
        raise DataError(f"{path}: could not be parsed; expected {layout}") from None
    values = frame.to_numpy()
    bad = ~np.isfinite(values).all(axis=1)
    if rating_range is not None and "rating" in frame:
        r = frame["rating"].to_numpy()
        bad |= (r < lo) | (r > hi)
    if bad.any():
        scan(path, text, sep, [k], names, layout, check)
        raise DataError(f"{path}: row {int(np.argmax(bad)) + 1} has an empty or bad value; expected {layout}")
    return {name: frame[name].to_numpy() for name in frame.columns}


def line_of_row(text: str, row: int) -> int:
    """Line number of the ``row``-th (0-based) non-blank line."""
    return lines(text)[row][0]


def deduplicate(path: Path, text: str, user: np.ndarray, item: np.ndarray, policy: str) -> np.ndarray:
    """Row positions to keep under the duplicate (user, item) policy: ``error`` or ``last`` (keep the last row in
    file order, drop earlier ones)."""
    if policy not in ("error", "last"):
        raise DataError(f"duplicates: expected 'error' or 'last', got {policy!r}")
    pairs = pd.DataFrame({"u": user, "i": item})
    dup = pairs.duplicated(keep="last").to_numpy()
    if not dup.any():
        return np.arange(len(user))
    if policy == "error":
        later = pairs.duplicated(keep="first").to_numpy()
        row = int(np.argmax(later))
        first = int(np.argmax(dup & (user == user[row]) & (item == item[row])))
        raise DataError(f"{path}: line {line_of_row(text, row)}: duplicate rating of user {user[row]:g} for item "
                        f"{item[row]:g} (first on line {line_of_row(text, first)}); expected one row per (user, item) "
                        "pair (set duplicates: last to keep the last one)")
    return np.flatnonzero(~dup)
