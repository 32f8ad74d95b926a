"""Step 0 of an import, in memory only: read a stock CSV line by line and check every line.

A streaming pre-parse with a bounded buffer (flat memory whatever the file holds): each line is
checked for UTF-8, columns, SKU, known warehouse, numbers and length, and comes out as a good row
or a row error. A wrong header or an empty file refuses the whole file (FileError).
"""

import csv
import re
from collections.abc import Iterator
from typing import BinaryIO

from inventory.models import SKU_PATTERN, Product

REQUIRED_COLUMNS = ("sku", "warehouse", "on_hand")
OPTIONAL_COLUMNS = ("name", "price")
MAX_ON_HAND = 1_000_000_000
SKU_RE = re.compile(SKU_PATTERN)
PRICE_RE = re.compile(r"\d{1,10}(?:\.\d{1,2})?")
NAME_MAX = Product._meta.get_field("name").max_length


class FileError(Exception):
    """The file as a whole cannot be imported (empty, unreadable or wrong header)."""

    def __init__(self, line: int | None, message: str):
        self.line = line
        self.message = message
        super().__init__(message)


def _physical_lines(stream: BinaryIO, max_bytes: int) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text without its line break, problem) for each line of the file.

    Reads at most max_bytes + 2 bytes at a time, so an over-long line (or a file without line
    breaks) is skipped in bounded steps instead of being held in memory. Each line is decoded on
    its own: a bad byte spoils its line only.
    """
    readline = stream.readline
    limit = max_bytes + 2  # room for "\r\n"
    number = 0
    while True:
        raw = readline(limit)
        if not raw:
            return
        number += 1
        if raw[-1] != 10 and len(raw) == limit:  # no line break within the limit: too long
            while True:
                rest = readline(65536)
                if not rest or rest[-1] == 10:
                    break
            yield number, None, f"The line is longer than {max_bytes} bytes."
            continue
        raw = raw.rstrip(b"\r\n")
        if len(raw) > max_bytes:
            yield number, None, f"The line is longer than {max_bytes} bytes."
            continue
        try:
            yield number, raw.decode("utf-8"), None
        except UnicodeDecodeError as exc:
            yield number, None, f"The line is not valid UTF-8 (byte {exc.start + 1})."


def _split(text: str) -> list[str]:
    if '"' not in text:
        return text.split(",")  # what csv would return for a line without quotes, much faster
    return next(csv.reader([text], strict=True))


def _header(number: int, text: str) -> list[str]:
    try:
        names = [name.strip().lower() for name in _split(text)]
    except csv.Error as exc:
        raise FileError(number, f"The header line is not valid CSV: {exc}.") from None
    # Other columns are ignored: a stock export (which adds reserved, available...) imports as is.
    problems = []
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    repeated = sorted({name for name in names if names.count(name) > 1 and name in REQUIRED_COLUMNS + OPTIONAL_COLUMNS})
    if missing:
        problems.append("missing " + ", ".join(missing))
    if repeated:
        problems.append("repeated " + ", ".join(repeated))
    if problems:
        raise FileError(
            number,
            "The header must name the columns sku, warehouse, on_hand and optionally name, price "
            f"({'; '.join(problems)}).",
        )
    return names


def _bad(line: int, message: str) -> tuple:
    return line, None, None, None, None, None, message


def parse_stock_csv(
    stream: BinaryIO, *, warehouses: dict[str, int], max_line_bytes: int
) -> Iterator[tuple[int, str | None, int | None, int | None, str | None, str | None, str | None]]:
    """Check each data line of a stock CSV; yield (line, sku, warehouse_id, on_hand, name, price, error).

    A good row has `error` None; a bad one has only its line and error. Raises FileError for an
    empty file or a bad header. Memory stays flat: nothing is kept between lines.
    """
    lines = _physical_lines(stream, max_line_bytes)
    for number, text, problem in lines:
        if problem is not None:
            raise FileError(number, f"The header line cannot be read: {problem}")
        if number == 1:
            text = text.removeprefix("\ufeff")  # a byte order mark, as spreadsheets write it
        if text.strip():
            break
    else:
        raise FileError(1, "The file is empty.")
    names = _header(number, text)
    width = len(names)
    i_sku, i_wh, i_qty = names.index("sku"), names.index("warehouse"), names.index("on_hand")
    i_name = names.index("name") if "name" in names else None
    i_price = names.index("price") if "price" in names else None
    sku_match, price_match = SKU_RE.fullmatch, PRICE_RE.fullmatch
    find_warehouse = warehouses.get

    for number, text, problem in lines:
        if problem is not None:
            yield _bad(number, problem)
            continue
        if not text or text.isspace():
            continue
        if "\x00" in text:
            yield _bad(number, "The line contains a NUL character.")
            continue
        try:
            fields = _split(text)
        except csv.Error as exc:
            yield _bad(number, f"The line is not valid CSV: {exc}.")
            continue
        if len(fields) != width:
            yield _bad(number, f"Expected {width} columns, found {len(fields)}.")
            continue
        sku = fields[i_sku].strip()
        if not sku_match(sku):
            message = (
                "sku is empty."
                if not sku
                else f"sku {sku[:70]!r} is not valid (letters, digits, '.', '_', '-'; at most 64)."
            )
            yield _bad(number, message)
            continue
        code = fields[i_wh].strip()
        warehouse_id = find_warehouse(code)
        if warehouse_id is None:
            yield _bad(number, f"Unknown warehouse {code[:40]!r}.")
            continue
        quantity = fields[i_qty].strip()
        if not (quantity.isascii() and quantity.isdigit() and len(quantity) <= 10) or int(quantity) > MAX_ON_HAND:
            yield _bad(number, f"on_hand {quantity[:40]!r} is not a whole number from 0 to {MAX_ON_HAND}.")
            continue
        name = price = None
        if i_name is not None:
            name = fields[i_name].strip() or None
            if name is not None and len(name) > NAME_MAX:
                yield _bad(number, f"name is longer than {NAME_MAX} characters.")
                continue
        if i_price is not None:
            price = fields[i_price].strip() or None
            if price is not None and not price_match(price):
                yield _bad(number, f"price {price[:40]!r} is not an amount like 12.50 (at most 2 decimals).")
                continue
        yield number, sku, warehouse_id, int(quantity), name, price, None
