"""Importing items and gold: odd encodings, bad rows blamed on their line, all-or-nothing,
idempotent re-imports, conflicts that never overwrite. Each test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from llmlabel.config import parse_config
from llmlabel.errors import ImportRowsError, InputError
from llmlabel.ingest import ImportReport, import_gold, import_items
from llmlabel.projects import sync_project
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Gold, Item

from .conftest import Loaded, count

WriteFile = Callable[[str, str | bytes], Path]
# Reading and parsing problems do not depend on the database: these run on SQLite only.
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def items_in(lo: Loaded, path: Path, **kw: Any) -> ImportReport:
    return import_items(lo.engine, project=lo.project, config=lo.config, path=path, **kw)


def gold_in(lo: Loaded, path: Path, **kw: Any) -> ImportReport:
    return import_gold(lo.engine, project=lo.project, config=lo.config, path=path, **kw)


def stored(lo: Loaded) -> dict[str, dict[str, Any]]:
    with lo.engine.connect() as conn:
        rows = conn.execute(select(Item.external_id, Item.fields).where(Item.project_id == lo.project.id))
        return {ext: fields for ext, fields in rows}


def stored_gold(lo: Loaded) -> dict[str, Any]:
    with lo.engine.connect() as conn:
        rows = conn.execute(select(Item.external_id, Gold.label).join(Gold, Gold.item_id == Item.id))
        return {ext: label for ext, label in rows}


def jsonl(*rows: dict[str, Any]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def rejects_of(report: ImportReport) -> list[dict[str, Any]]:
    assert report.reject_path is not None
    return [json.loads(line) for line in Path(report.reject_path).read_text(encoding="utf-8").splitlines()]


def failure(fn: Callable[[], Any]) -> ImportRowsError:
    with pytest.raises(ImportRowsError) as info:
        fn()
    return info.value


# --- encodings and shapes -------------------------------------------------------------------


def test_bom_and_crlf_jsonl(loaded: Loaded, write_file: WriteFile) -> None:
    path = write_file("items.jsonl", b'\xef\xbb\xbf{"id": "a", "text": "one"}\r\n{"id": "b", "text": "two"}\r\n\r\n')
    report = items_in(loaded, path)
    assert (report.rows, report.inserted, report.bad) == (2, 2, 0)
    assert stored(loaded) == {"a": {"text": "one"}, "b": {"text": "two"}}


def test_bom_and_crlf_csv(loaded: Loaded, write_file: WriteFile) -> None:
    path = write_file("items.csv", b"\xef\xbb\xbfid,text\r\na,one\r\nb,two\r\n")
    report = items_in(loaded, path)
    assert (report.inserted, report.bad) == (2, 0)
    assert stored(loaded) == {"a": {"text": "one"}, "b": {"text": "two"}}, "the BOM must not stick to the 'id' header"


def test_csv_quoted_newlines_keep_later_line_numbers_right(loaded: Loaded, write_file: WriteFile) -> None:
    path = write_file(
        "items.csv",
        'id,text\r\na,"line one\r\nline two\r\nline three"\r\nb,"x, ""quoted"""\r\nc,too,many\r\nd,fine\r\n',
    )
    err = failure(lambda: items_in(loaded, path))
    assert err.total_bad == 1
    assert str(err.problems[0]) == f"{path}:6: has 3 cells but the header has 2 columns"
    assert count(loaded.engine, Item) == 0
    report = items_in(loaded, path, on_error="skip")
    assert report.inserted == 3
    assert stored(loaded)["a"] == {"text": "line one\r\nline two\r\nline three"}
    assert stored(loaded)["b"] == {"text": 'x, "quoted"'}


def test_unicode_round_trips(loaded: Loaded, write_file: WriteFile) -> None:
    texts = {"emoji": "great 👍🏽 product 🎉", "cjk": "質量很好，非常滿意", "rtl": "ممتاز", "combining": "e\u0301"}
    rows = [{"id": k, "text": v} for k, v in texts.items()]
    items_in(loaded, write_file("items.jsonl", jsonl(*rows)))
    header = "id,text\n" + "".join(f"{k}-csv,{v}\n" for k, v in texts.items())
    items_in(loaded, write_file("items.csv", header))
    got = stored(loaded)
    for k, v in texts.items():
        assert got[k] == {"text": v}
        assert got[f"{k}-csv"] == {"text": v}


def test_escaped_unicode_is_the_same_item(loaded: Loaded, write_file: WriteFile) -> None:
    items_in(loaded, write_file("a.jsonl", '{"id": "e", "text": "\\ud83d\\ude00 caf\\u00e9"}\n'))
    report = items_in(loaded, write_file("b.jsonl", '{"id": "e", "text": "😀 café"}\n'))
    assert (report.inserted, report.unchanged, report.bad) == (0, 1, 0)


@sqlite_only
@pytest.mark.parametrize("content", ["", "\n\n", "id,text\n"], ids=["empty", "blank-lines", "header-only"])
def test_empty_files_import_nothing(loaded: Loaded, write_file: WriteFile, content: str) -> None:
    name = "items.csv" if content.startswith("id") else "items.jsonl"
    report = items_in(loaded, write_file(name, content))
    assert (report.rows, report.inserted, report.bad) == (0, 0, 0)
    assert count(loaded.engine, Item) == 0


def test_duplicate_ids_in_one_file(loaded: Loaded, write_file: WriteFile) -> None:
    same = write_file("same.jsonl", jsonl({"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "x"}))
    report = items_in(loaded, same)
    assert (report.inserted, report.unchanged, report.bad) == (2, 1, 0)

    differ = write_file("differ.jsonl", jsonl({"id": "c", "text": "x"}, {"id": "d", "text": "y"}, {"id": "c", "text": "z"}))
    err = failure(lambda: items_in(loaded, differ))
    assert str(err.problems[0]) == f"{differ}:3: id 'c' appears again (first at line 1) with different content"
    assert count(loaded.engine, Item) == 2


def test_integer_and_string_ids_are_one_id(loaded: Loaded, write_file: WriteFile) -> None:
    report = items_in(loaded, write_file("a.jsonl", jsonl({"id": 7, "text": "x"}, {"id": " 7 ", "text": "x"})))
    assert (report.inserted, report.unchanged) == (1, 1)
    assert list(stored(loaded)) == ["7"]


BAD_ROWS = [
        ("missing-id.jsonl", '{"id": "a"}\n{"text": "no id"}\n', 2, "missing the id field 'id'"),
        ("empty-id.jsonl", '{"id": "a"}\n{"id": "  "}\n', 2, "id field 'id' is empty"),
        ("float-id.jsonl", '{"id": 1.5}\n', 1, "id field 'id' must be a string or an integer, got 1.5"),
        ("long-id.jsonl", json.dumps({"id": "x" * 300}) + "\n", 1, "is longer than 256 characters"),
        ("bad.jsonl", '{"id": "a"}\n{"id": "b", oops}\n', 2, "not valid JSON: Expecting property name"),
        ("array.jsonl", '{"id": "a"}\n[1, 2]\n', 2, "expected a JSON object, got list"),
        ("cells.csv", "id,text\na,x\nb,x,y\n", 3, "has 3 cells but the header has 2 columns"),
        ("missing-id.csv", "text,other\nx,y\n", 2, "missing the id field 'id'"),
        ("unclosed.csv", 'id,text\na,x\nb,"never closed\n', 3, "malformed CSV"),
]


@sqlite_only
@pytest.mark.parametrize(("name", "content", "line", "reason"), BAD_ROWS, ids=[c[0] for c in BAD_ROWS])
def test_bad_row_is_blamed_on_its_line(loaded: Loaded, write_file: WriteFile, name: str, content: str, line: int, reason: str) -> None:
    path = write_file(name, content)
    err = failure(lambda: items_in(loaded, path))
    assert str(err.problems[0]).startswith(f"{path}:{line}: ")
    assert reason in str(err.problems[0])
    assert str(err).startswith("1 bad row(s), nothing imported: ")
    assert count(loaded.engine, Item) == 0


STORAGE_REFUSES = [
    ("nul-id.jsonl", '{"id": "a\\u0000b"}\n', "contains a NUL character"),
    ("nul-id.csv", "id,text\nb\x00,y\n", "contains a NUL character"),
    ("nan.jsonl", '{"id": "a", "score": NaN}\n', "not valid JSON: NaN is not a JSON number"),
    ("infinity.jsonl", '{"id": "a", "score": -Infinity}\n', "not valid JSON: -Infinity is not a JSON number"),
    ("surrogate.jsonl", '{"id": "a", "text": "\\ud800"}\n', "half a surrogate pair"),
]


@pytest.mark.parametrize(("name", "content", "reason"), STORAGE_REFUSES, ids=[c[0] for c in STORAGE_REFUSES])
def test_values_a_database_cannot_store_are_bad_rows(
    loaded: Loaded, write_file: WriteFile, name: str, content: str, reason: str
) -> None:
    """PostgreSQL refuses NUL in text and NaN in JSON; UTF-8 cannot hold a lone surrogate."""
    path = write_file(name, content)
    err = failure(lambda: items_in(loaded, path))
    assert str(err.problems[0]).startswith(f"{path}:")
    assert reason in str(err.problems[0])


def test_nul_inside_a_field_value_is_stored(loaded: Loaded, write_file: WriteFile) -> None:
    items_in(loaded, write_file("nul.jsonl", '{"id": "a", "text": "x\\u0000y"}\n'))
    assert stored(loaded) == {"a": {"text": "x\x00y"}}


@sqlite_only
@pytest.mark.parametrize("name", ["items.jsonl", "items.csv"])
def test_invalid_utf8_is_blamed_on_its_own_line(loaded: Loaded, write_file: WriteFile, name: str) -> None:
    if name.endswith(".csv"):
        content = b"id,text\na,fine\nb,caf\xe9\nc,fine\n"
        bad_line = 3
    else:
        content = b'{"id": "a", "text": "fine"}\n{"id": "b", "text": "caf\xe9"}\n{"id": "c", "text": "fine"}\n'
        bad_line = 2
    path = write_file(name, content)
    err = failure(lambda: items_in(loaded, path))
    assert err.total_bad == 1
    assert str(err.problems[0]).startswith(f"{path}:{bad_line}: not valid UTF-8")
    report = items_in(loaded, path, on_error="skip")
    assert sorted(stored(loaded)) == ["a", "c"]
    assert report.bad == 1


@sqlite_only
def test_header_problems_are_input_errors(loaded: Loaded, write_file: WriteFile) -> None:
    with pytest.raises(InputError, match=r":1: the header repeats column\(s\) text"):
        items_in(loaded, write_file("dup.csv", "id,text,text\na,b,c\n"))
    with pytest.raises(InputError, match="cannot tell the format"):
        items_in(loaded, write_file("items.txt", "x"))
    with pytest.raises(InputError, match="does not exist"):
        items_in(loaded, loaded_path_missing(write_file))


def loaded_path_missing(write_file: WriteFile) -> Path:
    return write_file("x.jsonl", "").with_name("missing.jsonl")


# --- fail / skip, reject file -----------------------------------------------------------------


def test_fail_mode_imports_nothing_and_lists_every_bad_line(loaded: Loaded, write_file: WriteFile) -> None:
    rows = [json.dumps({"id": f"i{n}", "text": "ok"}) for n in range(4500)]  # spans three batches
    rows[10] = '{"id": "broken"'
    rows[4400] = '{"text": "no id"}'
    path = write_file("items.jsonl", "\n".join(rows) + "\n")
    err = failure(lambda: items_in(loaded, path))
    assert err.total_bad == 2
    assert [str(p) for p in err.problems] == [
        f"{path}:11: not valid JSON: Expecting ',' delimiter at column 16",
        f"{path}:4401: missing the id field 'id'",
    ]
    assert "--on-error skip" in str(err)
    assert count(loaded.engine, Item) == 0, "fail mode must roll back the rows of earlier batches too"


def test_skip_mode_imports_good_rows_and_writes_rejects(loaded: Loaded, write_file: WriteFile) -> None:
    path = write_file(
        "items.jsonl",
        jsonl({"id": "a", "text": "x"}) + "not json\n" + jsonl({"text": "no id"}, {"id": "b", "text": "y"}),
    )
    report = items_in(loaded, path, on_error="skip")
    assert (report.rows, report.inserted, report.bad) == (4, 2, 2)
    assert sorted(stored(loaded)) == ["a", "b"]
    assert report.reject_path == str(path) + ".rejects.jsonl"
    assert rejects_of(report) == [
        {"line": 2, "reason": "not valid JSON: Expecting value at column 1", "row": None},
        {"line": 3, "reason": "missing the id field 'id'", "row": {"text": "no id"}},
    ]


@sqlite_only
def test_reject_path_can_be_chosen_and_is_absent_when_clean(loaded: Loaded, write_file: WriteFile, tmp_path: Path) -> None:
    clean = items_in(loaded, write_file("ok.jsonl", jsonl({"id": "a"})), on_error="skip")
    assert clean.reject_path is None
    assert not (tmp_path / "ok.jsonl.rejects.jsonl").exists()
    target = tmp_path / "out" / "bad.jsonl"
    target.parent.mkdir()
    report = items_in(loaded, write_file("b.jsonl", "{\n"), on_error="skip", reject_path=target)
    assert report.reject_path == str(target)
    assert rejects_of(report)[0]["line"] == 1


# --- idempotence and conflicts ---------------------------------------------------------------


def test_reimport_is_idempotent(loaded: Loaded, write_file: WriteFile) -> None:
    path = write_file("items.jsonl", jsonl(*({"id": f"i{n}", "text": f"t{n}", "n": n} for n in range(50))))
    first = items_in(loaded, path)
    second = items_in(loaded, path)
    assert (first.inserted, first.unchanged) == (50, 0)
    assert (second.inserted, second.unchanged, second.bad) == (0, 50, 0)
    assert count(loaded.engine, Item) == 50


def test_imported_rows_get_the_same_defaults_as_orm_rows(loaded: Loaded, write_file: WriteFile) -> None:
    """The import writes through the driver for speed: no column default may be lost."""
    items_in(loaded, write_file("a.jsonl", jsonl({"id": "imported", "text": "x"})))
    with session_scope(loaded.engine) as session:
        session.add(Item(project_id=loaded.project.id, external_id="orm", fields={"text": "x"}, content_hash="h"))
    skip = {"id", "external_id", "content_hash", "created_at", "updated_at"}
    with loaded.engine.connect() as conn:
        rows = {r.external_id: r._asdict() for r in conn.execute(select(Item.__table__))}  # type: ignore[attr-defined]
    imported = {k: v for k, v in rows["imported"].items() if k not in skip}
    orm = {k: v for k, v in rows["orm"].items() if k not in skip}
    assert imported == orm
    assert rows["imported"]["created_at"].tzinfo is not None


def test_key_order_does_not_make_a_conflict(loaded: Loaded, write_file: WriteFile) -> None:
    items_in(loaded, write_file("a.jsonl", '{"id": "a", "x": 1, "y": {"p": 1, "q": 2}}\n'))
    report = items_in(loaded, write_file("b.jsonl", '{"y": {"q": 2, "p": 1}, "x": 1, "id": "a"}\n'))
    assert (report.unchanged, report.bad) == (1, 0)


def test_changed_content_is_a_conflict_and_never_overwrites(loaded: Loaded, write_file: WriteFile) -> None:
    items_in(loaded, write_file("v1.jsonl", jsonl({"id": "a", "text": "original"}, {"id": "b", "text": "same"})))
    v2 = write_file("v2.jsonl", jsonl({"id": "b", "text": "same"}, {"id": "a", "text": "edited"}, {"id": "c", "text": "new"}))
    err = failure(lambda: items_in(loaded, v2))
    assert str(err.problems[0]) == f"{v2}:2: conflict: id 'a' was imported before with different content"
    assert sorted(stored(loaded)) == ["a", "b"], "fail mode: the new item 'c' is not imported either"
    report = items_in(loaded, v2, on_error="skip")
    assert (report.inserted, report.unchanged, report.bad) == (1, 1, 1)
    assert stored(loaded)["a"] == {"text": "original"}
    assert rejects_of(report)[0]["row"] == {"id": "a", "text": "edited"}


def test_projects_do_not_share_items(loaded: Loaded, write_file: WriteFile) -> None:
    other_config = parse_config({"name": "other", "labels": {"type": "single", "classes": ["a", "b"]}})
    with session_scope(loaded.engine) as session:
        other = sync_project(session, config=other_config)
    path = write_file("items.jsonl", jsonl({"id": "a", "text": "x"}))
    items_in(loaded, path)
    report = import_items(loaded.engine, project=other, config=other_config, path=path)
    assert report.inserted == 1
    assert count(loaded.engine, Item) == 2


# --- gold ------------------------------------------------------------------------------------


@pytest.fixture
def with_items(loaded: Loaded, write_file: WriteFile) -> Loaded:
    items_in(loaded, write_file("items.jsonl", jsonl(*({"id": f"r{n}", "text": f"review {n}"} for n in range(5)))))
    return loaded


def test_gold_import_is_validated_and_idempotent(with_items: Loaded, write_file: WriteFile) -> None:
    lo = with_items
    path = write_file("gold.csv", "id,label,weight,split\nr0,positive,,\nr1, negative ,2,test\nr2,neutral,,dev\n")
    first = gold_in(lo, path)
    assert (first.inserted, first.bad) == (3, 0)
    assert stored_gold(lo) == {"r0": "positive", "r1": "negative", "r2": "neutral"}
    with lo.engine.connect() as conn:
        r1 = conn.execute(select(Gold.weight, Gold.split).join(Item, Item.id == Gold.item_id).where(Item.external_id == "r1")).one()
    assert tuple(r1) == (2.0, "test")
    again = gold_in(lo, path)
    assert (again.inserted, again.unchanged, again.bad) == (0, 3, 0)
    assert count(lo.engine, Gold) == 3


@sqlite_only
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("id,label\nr0,postive\n", "label 'postive' is not one of: positive, negative, neutral (did you mean 'positive'?)"),
        ("id,label\nnope,positive\n", "no item with id 'nope' in the project: import the items first"),
        ("id,label\nr0,\n", "missing the label field 'label'"),
        ("id,label,weight\nr0,positive,0\n", "weight 0.0 must be in (0, 100]"),
        ("id,label,weight\nr0,positive,heavy\n", "could not convert string to float"),
        ("id,label,split\nr0,positive,train\n", "split 'train' must be 'dev' or 'test'"),
    ],
)
def test_bad_gold_is_rejected_with_its_reason(with_items: Loaded, write_file: WriteFile, content: str, reason: str) -> None:
    path = write_file("gold.csv", content)
    err = failure(lambda: gold_in(with_items, path))
    assert str(err.problems[0]).startswith(f"{path}:2: ")
    assert reason in str(err.problems[0])
    assert count(with_items.engine, Gold) == 0


def test_conflicting_gold_is_reported_not_overwritten(with_items: Loaded, write_file: WriteFile) -> None:
    gold_in(with_items, write_file("g1.jsonl", jsonl({"id": "r0", "label": "positive"})))
    g2 = write_file("g2.jsonl", jsonl({"id": "r1", "label": "neutral"}, {"id": "r0", "label": "negative"}))
    err = failure(lambda: gold_in(with_items, g2))
    assert str(err.problems[0]) == f"{g2}:2: conflict: item 'r0' already has gold label 'positive'"
    assert stored_gold(with_items) == {"r0": "positive"}
    report = gold_in(with_items, g2, on_error="skip")
    assert (report.inserted, report.bad) == (1, 1)
    assert stored_gold(with_items) == {"r0": "positive", "r1": "neutral"}


def test_two_gold_labels_for_one_item_in_one_file(with_items: Loaded, write_file: WriteFile) -> None:
    path = write_file("g.jsonl", jsonl({"id": "r0", "label": "positive"}, {"id": "r0", "label": "negative"}))
    err = failure(lambda: gold_in(with_items, path))
    assert "conflict: item 'r0' already has gold label 'positive'" in str(err.problems[0])


def test_gold_field_is_stripped_from_the_item(loaded: Loaded, write_file: WriteFile) -> None:
    path = write_file(
        "items.jsonl",
        jsonl({"id": "a", "text": "love it", "gold": "positive"}, {"id": "b", "text": "meh", "gold": ""},
              {"id": "c", "text": "bad", "gold": "negative"}),
    )
    report = items_in(loaded, path, gold_field="gold")
    assert (report.inserted, report.gold_inserted) == (3, 2)
    items = stored(loaded)
    assert all("gold" not in fields for fields in items.values()), "a gold label left in the fields leaks to voters"
    assert items["a"] == {"text": "love it"}
    assert stored_gold(loaded) == {"a": "positive", "c": "negative"}
    again = items_in(loaded, path, gold_field="gold")
    assert (again.inserted, again.unchanged, again.gold_inserted, again.bad) == (0, 3, 0, 0)


def test_gold_field_bad_label_rejects_the_row(loaded: Loaded, write_file: WriteFile) -> None:
    path = write_file("items.csv", "id,text,gold\na,x,positive\nb,y,great\nc,z,negative\n")
    err = failure(lambda: items_in(loaded, path, gold_field="gold"))
    assert str(err.problems[0]) == f"{path}:3: label 'great' is not one of: positive, negative, neutral"
    assert count(loaded.engine, Item) == 0
    missing = write_file("nogold.csv", "id,text\na,x\n")
    err = failure(lambda: items_in(loaded, missing, gold_field="gold"))
    assert "missing the gold label field 'gold'" in str(err.problems[0])


def test_options_gold_is_checked_against_the_item(tmp_path: Path, engine: Any, write_file: WriteFile) -> None:
    config = parse_config({"name": "pairs", "labels": {"type": "options", "field": "replies"}})
    with session_scope(engine) as session:
        project = sync_project(session, config=config)
    lo = Loaded(engine, config, project)
    items_in(lo, write_file("items.jsonl", jsonl({"id": "p1", "replies": ["a", "b"]}, {"id": "p2", "replies": ["a", "b", "c"]})))
    path = write_file("gold.jsonl", jsonl({"id": "p1", "label": 1}, {"id": "p2", "label": "2"}, {"id": "p1", "label": 2}))
    err = failure(lambda: gold_in(lo, path))
    assert [str(p) for p in err.problems] == [f"{path}:3: option index 2 is out of range: the item has 2 options"]
    report = gold_in(lo, path, on_error="skip")
    assert report.inserted == 2
    assert stored_gold(lo) == {"p1": 1, "p2": 2}


# --- Parquet ---------------------------------------------------------------------------------


def test_parquet_values_become_json(loaded: Loaded, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    import datetime as dt
    from decimal import Decimal

    table = pa.table({
        "id": [1, 2, 3],
        "text": ["x", None, "é😀"],
        "score": [1.5, float("nan"), None],
        "when": [dt.date(2024, 1, 1), dt.date(2024, 1, 2), None],
        "price": pa.array([Decimal("9.99"), None, None], pa.decimal128(5, 2)),
        "tags": [["a"], [], None],
    })
    path = tmp_path / "items.parquet"
    pq.write_table(table, path)
    report = items_in(loaded, path)
    assert (report.inserted, report.bad) == (3, 0)
    got = stored(loaded)
    assert got["1"] == {"text": "x", "score": 1.5, "when": "2024-01-01", "price": 9.99, "tags": ["a"]}
    assert got["2"] == {"text": None, "score": None, "when": "2024-01-02", "price": None, "tags": []}, "NaN is null"
    assert got["3"]["text"] == "é😀"
    assert items_in(loaded, path).unchanged == 3


@sqlite_only
def test_parquet_binary_and_broken_files(loaded: Loaded, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "items.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "blob": [None, b"\x00\x01"]}), path)
    err = failure(lambda: items_in(loaded, path))
    assert str(err.problems[0]) == f"{path}:2: column 'blob' holds binary data, which cannot be stored as JSON; convert it to text"
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        items_in(loaded, broken)
