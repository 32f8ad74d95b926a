"""The streaming pre-parse on its own: every kind of bad line reported by its line, good lines kept."""

import io

import pytest

from inventory.imports import FileError, parse_stock_csv

WAREHOUSES = {"MAIN": 1, "EAST": 2}


def parse(data: bytes, *, max_line_bytes: int = 200) -> list[tuple]:
    return list(parse_stock_csv(io.BytesIO(data), warehouses=WAREHOUSES, max_line_bytes=max_line_bytes))


def errors(rows) -> dict[int, str]:
    return {row[0]: row[6] for row in rows if row[6] is not None}


def test_good_rows_carry_their_line_warehouse_id_and_numbers():
    rows = parse(b"sku,warehouse,on_hand\nMUG,MAIN,5\r\nTEA,EAST,0\n")
    assert rows == [(2, "MUG", 1, 5, None, None, None), (3, "TEA", 2, 0, None, None, None)]


def test_columns_may_come_in_any_order_with_name_and_price_and_a_byte_order_mark():
    data = '\ufeffPrice, Name ,on_hand,warehouse,sku\n4.50,"Tea, green",7,MAIN,TEA\n,,1,EAST,MUG\n'.encode()
    rows = parse(data)
    assert rows == [(2, "TEA", 1, 7, "Tea, green", "4.50", None), (3, "MUG", 2, 1, None, None, None)]


def test_blank_lines_are_skipped_and_line_numbers_stay_physical():
    rows = parse(b"sku,warehouse,on_hand\n\nMUG,MAIN,5\n   \nTEA,MAIN,1")
    assert [row[0] for row in rows] == [3, 5]


def test_each_bad_line_is_reported_by_its_line_and_the_good_lines_are_kept():
    data = b"".join(
        [
            b"sku,warehouse,on_hand,name,price\n",  # 1
            b"GOOD-1,MAIN,5,,\n",  # 2
            b"BAD-QTY,MAIN,-3,,\n",  # 3 negative
            b"BAD-QTY2,MAIN,1.5,,\n",  # 4 not whole
            b"BAD-QTY3,MAIN,12345678901,,\n",  # 5 too large
            b"BAD-WH,NOWHERE,1,,\n",  # 6 unknown warehouse
            b"BAD-\xff\xfe,MAIN,1,,\n",  # 7 not UTF-8
            b"X" * 300 + b",MAIN,1,,\n",  # 8 over-long line
            b"GOOD-2,EAST,7,Green tea,4.5\n",  # 9
            b"BAD-COLS,MAIN\n",  # 10 wrong number of columns
            b",MAIN,1,,\n",  # 11 empty sku
            b"bad sku,MAIN,1,,\n",  # 12 invalid sku
            b"BAD-PRICE,MAIN,1,Mug,12.345\n",  # 13 price with 3 decimals
            b'"BAD-QUOTE,MAIN,1,,\n',  # 14 unterminated quote
            b"BAD-NUL\x00,MAIN,1,,\n",  # 15 NUL byte
            b"GOOD-3,MAIN,0,,\n",  # 16
        ]
    )
    rows = parse(data)
    assert [row[:4] for row in rows if row[6] is None] == [
        (2, "GOOD-1", 1, 5),
        (9, "GOOD-2", 2, 7),
        (16, "GOOD-3", 1, 0),
    ]
    found = errors(rows)
    assert sorted(found) == [3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15]
    assert "on_hand '-3'" in found[3]
    assert "on_hand '1.5'" in found[4]
    assert "whole number" in found[5]
    assert found[6] == "Unknown warehouse 'NOWHERE'."
    assert "UTF-8" in found[7]
    assert "longer than 200 bytes" in found[8]
    assert found[10] == "Expected 5 columns, found 2."
    assert found[11] == "sku is empty."
    assert "'bad sku' is not valid" in found[12]
    assert "price '12.345'" in found[13]
    assert "not valid CSV" in found[14]
    assert "NUL" in found[15]


def test_a_line_without_any_line_break_is_skipped_in_bounded_steps():
    data = b"sku,warehouse,on_hand\n" + b"A" * 1_000_000 + b"\nMUG,MAIN,1\n"
    rows = parse(data, max_line_bytes=100)
    assert errors(rows) == {2: "The line is longer than 100 bytes."}
    assert rows[-1] == (3, "MUG", 1, 1, None, None, None)


@pytest.mark.parametrize(
    ("data", "line", "fragment"),
    [
        (b"", 1, "The file is empty."),
        (b"\n\n  \n", 1, "The file is empty."),
        (b"sku,warehouse\nMUG,MAIN\n", 1, "missing on_hand"),
        (b"sku,sku,warehouse,on_hand\n", 1, "repeated sku"),
        (b"\n\xff\xfe,warehouse,on_hand\n", 2, "cannot be read"),
    ],
)
def test_an_empty_file_or_a_bad_header_refuses_the_whole_file(data, line, fragment):
    with pytest.raises(FileError) as refused:
        parse(data)
    assert refused.value.line == line
    assert fragment in refused.value.message


def test_columns_the_import_does_not_know_are_ignored_so_a_stock_export_imports_as_is():
    data = b"sku,warehouse,on_hand,reserved,available,version,updated_at\nMUG,MAIN,5,2,3,4,2026-01-01T00:00:00\n"
    assert parse(data) == [(2, "MUG", 1, 5, None, None, None)]
