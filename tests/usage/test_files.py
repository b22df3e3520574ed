"""Usage files: line numbers, accounts and derived event ids of the rows of CSV and JSONL."""

from __future__ import annotations

from pathlib import Path

import pytest

from aihub_billing.usage.files import UsageFile, UsageFileError, derive_event_id


def rows(path: Path, text: str, account: str | None = "acct_a") -> list[tuple[int, str | None]]:
    path.write_text(text, encoding="utf-8")
    with UsageFile(path, "jsonl" if path.suffix == ".jsonl" else "csv") as usage_file:
        return [(r.line, r.event_id or r.error) for r in usage_file.rows(account)]


def test_derived_ids_ignore_column_order_and_blanks_and_count_identical_rows(
    tmp_path: Path,
) -> None:
    one = rows(tmp_path / "a.csv", "model,timestamp\ngpt-4o,2026-03-10T12:00:00Z\n")
    other_order = rows(
        tmp_path / "b.csv",
        "timestamp , model\n\n 2026-03-10T12:00:00Z,gpt-4o\n2026-03-10T12:00:00Z,gpt-4o\n",
    )
    fields = {"model": "gpt-4o", "timestamp": "2026-03-10T12:00:00Z"}
    first, second = derive_event_id("acct_a", fields, 0), derive_event_id("acct_a", fields, 1)
    assert one == [(2, first)]
    # A blank line keeps its number; the second identical row is a second event.
    assert other_order == [(3, first), (4, second)] and first != second
    assert first.startswith("imp_") and len(first) == 36
    assert derive_event_id("acct_b", fields, 0) != first
    jsonl = rows(tmp_path / "c.jsonl", '{"timestamp": "2026-03-10T12:00:00Z", "model": "gpt-4o"}\n')
    assert jsonl == [(1, first)]


def test_rows_name_their_account_or_are_refused(tmp_path: Path) -> None:
    text = (
        "account_id,model,event_id,timestamp\n"
        "acct_a,gpt-4o,e1,\n"
        "acct_b,gpt-4o,e2,\n"
        ",gpt-4o,,\n"
        '"acct_a","gpt-4o","e3\n'
        'continued",x\n'
        "acct_a,gpt-4o,e4,,extra\n"
    )
    assert rows(tmp_path / "a.csv", text) == [
        (2, "e1"),
        (3, "account_id 'acct_b' is not --account"),
        (4, "timestamp: a row without event_id needs one"),
        (5, "e3\ncontinued"),  # a quoted cell over two lines: the row starts on line 5
        (7, "5 cells for 4 columns"),
    ]
    assert rows(tmp_path / "b.csv", text, account=None)[1] == (3, "e2")
    assert rows(tmp_path / "c.csv", "model\ngpt-4o\n", account=None) == [
        (2, "no account: give --account or an account_id")
    ]


def test_unreadable_content_stops_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"model,event_id\ngpt-4o,e1\ngpt-4o,\xff\n")
    with UsageFile(path, "csv") as usage_file, pytest.raises(UsageFileError, match="line 3"):
        list(usage_file.rows("acct_a"))
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(UsageFileError, match="no header row"):
        UsageFile(tmp_path / "empty.csv", "csv")


@pytest.mark.parametrize(
    "content",
    ['model,event_id\ngpt-4o,e1\n"gpt-4o"x,e2\n', 'model,event_id\ngpt-4o,e1\ngpt-4o,"e2\n'],
)
def test_broken_csv_quoting_stops_at_its_line(tmp_path: Path, content: str) -> None:
    # Lenient parsing read `"gpt-4o"x` as the model gpt-4ox, and an unclosed quote as a cell
    # holding the rest of the file.
    path = tmp_path / "quotes.csv"
    path.write_text(content)
    with UsageFile(path, "csv") as usage_file, pytest.raises(UsageFileError, match="line 3"):
        list(usage_file.rows("acct_a"))
