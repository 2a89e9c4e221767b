"""Private helpers shared by the CSV readers and writers of :mod:`spfluo.io`.

The CSV dialect is the default of :mod:`csv` (comma separated, double quotes where a
value needs them), one header line, UTF-8. Blank lines and lines whose first cell starts
with ``#`` are skipped, so hand-made files may carry comments. Errors name the file and
the line (1-based, as an editor shows it).
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spfluo.io._text import format_number, read_text_file
from spfluo.io.atomic import atomic_write_path

_INT_RE = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class CsvTable:
    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str) -> list[str]:
        i = self.header.index(name)
        return [row[i] for row in self.rows]


def read_csv_table(path: str | os.PathLike, what: str) -> CsvTable:
    """Read a CSV file into header and rows of stripped strings, with line numbers."""
    path = Path(path)
    text = read_text_file(path, what=what, kind=f"{what} CSV", encoding="utf-8-sig",
                          fix=f"; save the {what} table as UTF-8 CSV")
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        for row in reader:
            cells = [c.strip() for c in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if header is None:
                header = cells
                seen = set()
                for name in header:
                    if not name:
                        raise ValueError(f"{str(path)!r}, line {reader.line_num}: the header has "
                                         "an empty column name; name every column")
                    if name in seen:
                        raise ValueError(f"{str(path)!r}, line {reader.line_num}: the header "
                                         f"repeats the column {name!r}; keep one of them")
                    seen.add(name)
                continue
            if len(cells) != len(header):
                raise ValueError(f"{str(path)!r}, line {reader.line_num}: {len(cells)} values for "
                                 f"{len(header)} columns ({', '.join(header)}); every row needs "
                                 "one value per column")
            rows.append(cells)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise ValueError(f"{str(path)!r}, line {reader.line_num}: not valid CSV ({exc})") from None
    if header is None:
        raise ValueError(f"{str(path)!r} is empty; a {what} CSV file starts with a header line "
                         "naming its columns")
    return CsvTable(path, header, rows, lines)


def parse_number(table: CsvTable, row: int, column: str, *, integer: bool = False,
                 allow_nan: bool = False) -> float | int:
    """Parse one cell as a float (or an int), with an error naming file, line and column."""
    cell = table.rows[row][table.header.index(column)]
    where = f"{str(table.path)!r}, line {table.lines[row]}, column {column!r}"
    if integer:
        if not _INT_RE.match(cell):
            raise ValueError(f"{where}: {cell!r} is not an integer; write a whole number")
        return int(cell)
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(f"{where}: {cell!r} is not a number; write a decimal number") from None
    if not allow_nan and not math.isfinite(value):
        raise ValueError(f"{where}: the value is {cell!r}; every value must be a finite number: "
                         "fill in or remove this row")
    return value


def infer_column(values: Sequence[str]) -> np.ndarray:
    """Turn a column of strings into an int64, float64 or str array (in that preference)."""
    if values and all(_INT_RE.match(v) for v in values):
        return np.array([int(v) for v in values], dtype=np.int64)
    if values:
        try:
            return np.array([float(v) for v in values], dtype=np.float64)
        except ValueError:
            pass
    return np.array(list(values), dtype=str)


def format_value(value: Any) -> str:
    """Text of one CSV cell: shortest exact form for floats, plain text otherwise."""
    text = format_number(value)
    return str(value) if text is None else text


def write_csv_table(path: str | os.PathLike, header: Sequence[str],
                    columns: Sequence[Sequence[Any]]) -> Path:
    """Write columns under a header, atomically."""
    path = Path(path)
    n = len(columns[0]) if columns else 0
    with atomic_write_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(list(header))
            for i in range(n):
                writer.writerow([format_value(col[i]) for col in columns])
    return path
