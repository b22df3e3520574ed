"""Usage events read from CSV or JSONL files (`aihub-billing usage import`): each row with its
line number, its account, and an event id, derived from its fields when the file has none.

A derived id is `imp_` + the first 32 hex digits of SHA-256 over the account and the row's
fields (canonical JSON: key order, column order and surrounding blanks do not matter), and the
row's occurrence among identical rows of the file (the second identical row is a second event).
The same file imported again derives the same ids, so a re-run adds nothing, also after rows
were appended, inserted or reordered. A row without an event id must have a timestamp: without
one it would be stamped at import time and nothing would tell a re-run from new usage.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from aihub_billing.usage.schemas import UsageEventIn

__all__ = ["COLUMNS", "FileRow", "Format", "UsageFile", "UsageFileError", "derive_event_id"]

Format = Literal["csv", "jsonl"]
EVENT_FIELDS = tuple(UsageEventIn.model_fields)
COLUMNS = frozenset({*EVENT_FIELDS, "account_id"})
ID_PREFIX = "imp_"
# CSV cells are text; the API takes these fields as JSON integers only.
_INTEGER_FIELDS = frozenset(
    n for n, f in UsageEventIn.model_fields.items() if f.annotation in (int, int | None)
)
_INTEGER = re.compile(r"^[+-]?[0-9]+$")


class UsageFileError(ValueError):
    """The file cannot be read on (not UTF-8, broken CSV, unknown columns): stop there."""


@dataclass(frozen=True, slots=True)
class FileRow:
    """One row: an event for the tracker (its fields as written, CSV integers as numbers, the
    event id filled in), or why it cannot be one."""

    line: int
    account_id: str | None
    event: dict[str, Any] | None
    error: str | None = None
    event_id: str | None = None


def derive_event_id(account_id: str, fields: dict[str, Any], occurrence: int) -> str:
    """The id of an id-less row: its account and fields, and which identical row it is
    (0 for the first)."""
    return ID_PREFIX + _digest(_canonical(account_id, fields), occurrence).hex()[:32]


def _canonical(account_id: str, fields: dict[str, Any]) -> bytes:
    return json.dumps([account_id, fields], sort_keys=True, separators=(",", ":")).encode()


def _digest(content: bytes, occurrence: int) -> bytes:
    if occurrence:
        content += f"#{occurrence}".encode()
    return hashlib.sha256(content).digest()


class UsageFile:
    """An open usage file; `rows()` reads it once. `position` is how far it has been read, in
    bytes (to the read-ahead buffer), for a progress bar against `size`."""

    def __init__(self, path: Path, format: Format) -> None:
        self.path = path
        self.format = format
        self._binary: BinaryIO = path.open("rb")  # OSError: the caller says it cannot read
        self.size = path.stat().st_size
        self.columns: tuple[str, ...] = ()
        # Occurrences of id-less rows by a 64-bit key of their content: a collision only
        # shares a counter between two contents, each id still hashes its full content.
        self._seen: dict[int, int] = {}
        self._lines = self._decoded()
        if format == "csv":
            # strict: a stray or unclosed quote stops the import at its line instead of
            # gluing the rest of the row into one cell.
            self._csv = csv.reader(self._lines, strict=True)
            self._header()

    def close(self) -> None:
        self._binary.close()

    def __enter__(self) -> UsageFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def position(self) -> int:
        return self._binary.tell()

    def _decoded(self) -> Iterator[str]:
        """The file's lines, decoded one at a time so that an error names its line (utf-8-sig
        on the first: spreadsheet exports start with a byte order mark)."""
        for number, raw in enumerate(self._binary, start=1):
            try:
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise UsageFileError(f"line {number}: not UTF-8 text") from None

    def _header(self) -> None:
        try:
            header = next(self._csv, None)
        except csv.Error as exc:
            raise UsageFileError(f"line 1: {exc}") from None
        if not header:
            raise UsageFileError("no header row (the first line names the columns)")
        columns = tuple(c.strip() for c in header)
        unknown = sorted(set(columns) - COLUMNS)
        if unknown:
            raise UsageFileError(
                f"unknown column(s) {', '.join(map(repr, unknown))}; "
                f"columns are {', '.join(sorted(COLUMNS))}"
            )
        if len(set(columns)) < len(columns):
            raise UsageFileError("a column is named twice in the header")
        self.columns = columns

    def rows(self, account_id: str | None) -> Iterator[FileRow]:
        """The rows, in file order; `account_id` is the account of rows that name none, and
        rows naming another one are refused."""
        read = self._csv_rows() if self.format == "csv" else self._jsonl_rows()
        for line, fields, error in read:
            if error is not None:
                yield FileRow(line, None, None, error)
                continue
            assert fields is not None
            row = self._row(line, fields, account_id)
            if self.format == "csv" and row.event is not None:
                # After the id is derived: ids stay those of the cells as written.
                for name in _INTEGER_FIELDS & row.event.keys():
                    if _INTEGER.match(text := row.event[name]):
                        row.event[name] = int(text)
            yield row

    def _row(self, line: int, fields: dict[str, Any], default_account: str | None) -> FileRow:
        named = fields.pop("account_id", None)
        if named is not None and not isinstance(named, str):
            return FileRow(line, None, None, "account_id: not a string")
        if default_account is not None and named not in (None, default_account):
            return FileRow(line, None, None, f"account_id {named!r} is not --account")
        account = default_account or named
        if account is None:
            return FileRow(line, None, None, "no account: give --account or an account_id")
        event_id = fields.get("event_id")
        if event_id is None:
            if fields.get("timestamp") is None:
                return FileRow(line, account, None, "timestamp: a row without event_id needs one")
            content = _canonical(account, fields)
            first = _digest(content, 0)
            key = int.from_bytes(first[:8])
            occurrence = self._seen.get(key, 0)
            self._seen[key] = occurrence + 1
            digest = _digest(content, occurrence) if occurrence else first
            event_id = ID_PREFIX + digest.hex()[:32]
            fields["event_id"] = event_id
        return FileRow(line, account, fields, None, event_id if isinstance(event_id, str) else None)

    def _csv_rows(self) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        reader, columns = self._csv, self.columns
        end = reader.line_num
        while True:
            try:
                cells = next(reader, None)
            except csv.Error as exc:
                raise UsageFileError(f"line {end + 1}: {exc}") from None
            if cells is None:
                return
            line, end = end + 1, reader.line_num
            if not cells or not any(c.strip() for c in cells):
                continue  # a blank line
            if len(cells) > len(columns):
                yield line, None, f"{len(cells)} cells for {len(columns)} columns"
                continue
            # An empty cell is an absent field (its default applies).
            fields: dict[str, Any] = {
                name: value.strip()
                for name, value in zip(columns, cells, strict=False)
                if value.strip()
            }
            metadata = fields.get("metadata")
            if metadata is not None:
                try:
                    fields["metadata"] = json.loads(metadata)
                except ValueError:
                    yield line, None, "metadata: not valid JSON"
                    continue
            yield line, fields, None

    def _jsonl_rows(self) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        for line, text in enumerate(self._lines, start=1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except ValueError as exc:
                yield line, None, f"not valid JSON ({exc.args[0].split(':')[0]})"
                continue
            if not isinstance(value, dict):
                yield line, None, "not a JSON object"
                continue
            yield line, value, None
