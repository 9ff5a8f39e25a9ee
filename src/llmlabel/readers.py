"""Streaming row readers for JSONL, CSV and Parquet: one row in memory at a time.

Each reader yields ``(line, row)`` where ``row`` is a dict, or ``(line, RowProblem)`` for a
row that cannot be read, so one bad line never stops the reading of the rest. Lines are the
physical line where the record starts (a CSV record with quoted newlines spans several).
Bytes are decoded per line, so a stray non-UTF-8 byte is blamed on its own line.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from llmlabel.errors import InputError, RowProblem

Format = Literal["jsonl", "csv", "parquet"]
Row = tuple[int, dict[str, Any] | RowProblem]

csv.field_size_limit(64 * 1024 * 1024)


def detect_format(path: Path, fmt: str | None = None) -> Format:
    if fmt:
        if fmt not in ("jsonl", "csv", "parquet"):
            raise InputError(f"unknown format {fmt!r}: use jsonl, csv or parquet")
        return fmt  # type: ignore[return-value]
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] in ([".jsonl"], [".ndjson"], [".json"]):
        return "jsonl"
    if suffixes[-1:] in ([".csv"], [".tsv"]):
        return "csv"
    if suffixes[-1:] == [".parquet"]:
        return "parquet"
    raise InputError(f"cannot tell the format of {path} from its name: pass --format jsonl|csv|parquet")


def read_rows(path: Path, fmt: Format) -> Iterator[Row]:
    if not path.exists():
        raise InputError(f"file {path} does not exist")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a file")
    if fmt == "jsonl":
        return _read_jsonl(path)
    if fmt == "csv":
        return _read_csv(path)
    return _read_parquet(path)


def _read_jsonl(path: Path) -> Iterator[Row]:
    where = str(path)
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                yield line_no, RowProblem(where, line_no, f"not valid UTF-8 (byte {exc.start})")
                continue
            if not text:
                continue
            try:
                row = _DECODER.decode(text)
            except json.JSONDecodeError as exc:
                yield line_no, RowProblem(where, line_no, f"not valid JSON: {exc.msg} at column {exc.colno}")
                continue
            except ValueError as exc:
                yield line_no, RowProblem(where, line_no, f"not valid JSON: {exc}")
                continue
            if ("\\ud" in text or "\\uD" in text) and _has_lone_surrogate(row):
                yield line_no, RowProblem(where, line_no, "a \\uXXXX escape is half a surrogate pair (not valid Unicode)")
                continue
            if not isinstance(row, dict):
                yield line_no, RowProblem(where, line_no, f"expected a JSON object, got {type(row).__name__}")
                continue
            yield line_no, row


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (use null)")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)  # one decoder, not one per line


def _has_lone_surrogate(row: dict[str, Any]) -> bool:
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _decoded_lines(fh: Any, bad_lines: set[int]) -> Iterator[str]:
    for line_no, raw in enumerate(fh, start=1):
        if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            bad_lines.add(line_no)
            yield raw.decode("utf-8", errors="replace")


def _read_csv(path: Path) -> Iterator[Row]:
    where = str(path)
    bad_lines: set[int] = set()
    with path.open("rb") as fh:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        reader = csv.reader(_decoded_lines(fh, bad_lines), delimiter=delimiter, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"{where}:1: cannot read the CSV header: {exc}") from None
        header = [h.strip() for h in header]
        if len(set(header)) != len(header):
            dupes = sorted({h for h in header if header.count(h) > 1})
            raise InputError(f"{where}:1: the header repeats column(s) {', '.join(dupes)}")
        end = reader.line_num
        while True:
            start = end + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield start, RowProblem(where, start, f"malformed CSV: {exc}")
                end = reader.line_num
                continue
            end = reader.line_num
            if not values or (len(values) == 1 and not values[0].strip()):
                continue
            if any(n in bad_lines for n in range(start, end + 1)):
                yield start, RowProblem(where, start, "not valid UTF-8")
                continue
            if len(values) != len(header):
                yield start, RowProblem(
                    where, start, f"has {len(values)} cells but the header has {len(header)} columns"
                )
                continue
            yield start, dict(zip(header, values, strict=True))


def _read_parquet(path: Path) -> Iterator[Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("reading Parquet needs pyarrow: pip install 'llmlabel[parquet]'") from None
    where = str(path)
    line = 0
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=10_000)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, … for a file that is not Parquet
        raise InputError(f"{where}: not a readable Parquet file: {exc}") from None
    for batch in batches:
        for row in batch.to_pylist():
            line += 1
            try:
                yield line, {k: _jsonable(v, k) for k, v in row.items()}
            except ValueError as exc:
                yield line, RowProblem(where, line, str(exc))


def _jsonable(value: Any, column: str) -> Any:
    """Arrow values as JSON values: dates as ISO text, decimals as numbers, NaN as null (the
    missing value of pandas-written files); binary data is refused, not guessed at."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v, column) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, column) for v in value]
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        raise ValueError(f"column {column!r} holds binary data, which cannot be stored as JSON; convert it to text")
    raise ValueError(f"column {column!r} holds a {type(value).__name__}, which cannot be stored as JSON")
