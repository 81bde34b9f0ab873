"""Replay's file handling: external sort, CSV mapping, --until. No broker."""

import orjson
import pytest

from cli.replay import CsvMapping, ReplayError, parse_time_arg, rows, sort_by_event_time


def test_external_sort_orders_by_event_time_across_chunks_and_keeps_file_order_on_ties(tmp_path):
    src = tmp_path / "h.jsonl"
    times = [5, 3, 9, 3, 1, 7, 3, 8, 2, 6] * 3
    with src.open("wb") as f:
        for i, t in enumerate(times):
            f.write(orjson.dumps({"event_id": f"e{i}", "user_id": "u", "type": "login", "ts": 946_684_800_000 + t}) + b"\n")
        f.write(b"not json at all\n")
    ordered = sort_by_event_time(rows(src, None), tmp_path, until_ms=None, chunk_rows=4)
    assert len(ordered.chunks) == 8  # 30 rows, 4 per chunk: the file was never held whole
    out = [orjson.loads(v) if v != b"not json at all" else None for v, _ in ordered]
    timed = [o for o in out if o]
    assert [o["ts"] for o in timed] == sorted(o["ts"] for o in timed)
    ties = [int(o["event_id"][1:]) for o in timed if o["ts"] == 946_684_800_003]
    assert ties == sorted(ties)
    assert out[-1] is None and ordered.untimed_count == 1  # unreadable rows go last, not away


def test_until_keeps_only_events_at_or_before_the_cut_off(tmp_path):
    src = tmp_path / "h.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"event_id": str(t), "user_id": "u", "type": "view", "ts": t}) + b"\n"
                             for t in (946_684_800_000, 946_684_800_500, 946_684_801_000)))
    ordered = sort_by_event_time(rows(src, None), tmp_path, until_ms=946_684_800_500)
    assert [orjson.loads(v)["ts"] for v, _ in ordered] == [946_684_800_000, 946_684_800_500]
    assert ordered.skipped_after_until == 1


def test_csv_rows_are_mapped_to_the_contract(tmp_path):
    src = tmp_path / "retail.csv"
    src.write_text("InvoiceNo,CustomerID,InvoiceDate,Total\n"
                   "536365,17850,12/01/2010 08:26,15.30\n"
                   "C536379,17850,12/01/2010 09:41,-27.50\n")
    mapping = CsvMapping.parse("user_id=CustomerID,ts=InvoiceDate,amount=Total,order_id=InvoiceNo",
                               ts_format="%m/%d/%Y %H:%M", tz="Europe/London")
    got = [(ts, orjson.loads(v), k) for ts, v, k in rows(src, mapping)]
    assert got[0][1]["type"] == "order" and got[0][1]["amount"] == "15.30" and got[0][2] == b"17850"
    assert got[1][1]["type"] == "refund" and got[1][1]["amount"] == "27.50"  # negative total = refund
    assert got[0][0] == parse_time_arg("2010-12-01T08:26:00+00:00")
    again = [orjson.loads(v)["event_id"] for _, v, _ in rows(src, mapping)]
    assert again == [g[1]["event_id"] for g in got]  # stable ids: a second replay is a duplicate


@pytest.mark.parametrize("spec, message", [
    ("user_id=CustomerID", "ts"),
    ("user_id=CustomerID,ts=InvoiceDate,colour=Red", "colour"),
    ("user_id,ts=InvoiceDate", "field=Column"),
])
def test_bad_mappings_say_what_to_fix(spec, message):
    with pytest.raises(ReplayError, match=message):
        CsvMapping.parse(spec)


def test_csv_needs_a_mapping_and_existing_columns(tmp_path):
    src = tmp_path / "x.csv"
    src.write_text("a,b\n1,2\n")
    with pytest.raises(ReplayError, match="--map"):
        list(rows(src, None))
    with pytest.raises(ReplayError, match="no column"):
        list(rows(src, CsvMapping.parse("user_id=CustomerID,ts=b")))
