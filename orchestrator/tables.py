"""Printing result tables so that no figure is ever cut off.

rich shortens cells with an ellipsis when a table is wider than the console, and a
console that writes to a pipe is 80 columns wide: `inflection plan ... | cat` used to
print `276.…`. Every command that prints a table of figures goes through `print_table`:

- `table` (the default): on a terminal, columns fold instead of truncating; on a pipe
  or file, the console is made as wide as the table needs, so every figure is whole;
- `csv` and `json`: the same cells, machine-readable (headers as keys for JSON).
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Sequence
from enum import StrEnum

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text


class TableFormat(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"


def add_format_flag(parser: argparse.ArgumentParser) -> None:
    """The `--format table|csv|json` option, shared by every command that prints figures."""
    parser.add_argument(
        "--format",
        dest="table_format",
        choices=[f.value for f in TableFormat],
        default=TableFormat.TABLE.value,
        help="how to print result tables: a table (never truncated), csv or json (default: table)",
    )


def format_of(args: argparse.Namespace) -> TableFormat:
    return TableFormat(getattr(args, "table_format", TableFormat.TABLE.value))


def _plain(cell: object) -> str:
    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        return Text.from_markup(cell).plain
    return str(cell)


def table_cells(table: Table) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of a rich table as plain strings."""
    headers = [_plain(column.header) for column in table.columns]
    columns = [[_plain(cell) for cell in column.cells] for column in table.columns]
    rows = [list(row) for row in zip(*columns, strict=True)] if columns else []
    return headers, rows


def table_csv(table: Table) -> str:
    headers, rows = table_cells(table)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return out.getvalue()


def _json_doc(table: Table) -> dict[str, object]:
    headers, rows = table_cells(table)
    title = _plain(table.title) if table.title is not None else None
    return {"title": title, "rows": [dict(zip(headers, row, strict=True)) for row in rows]}


def table_json(table: Table) -> bytes:
    return orjson.dumps(_json_doc(table), option=orjson.OPT_INDENT_2)


def _keep_words_whole(table: Table) -> int:
    """Give every column a minimum width of its longest word (header or cell) and return
    the table's width at those minimums, padding and borders included. (Left alone, rich
    shrinks the widest columns first, below the width of the numbers in them.)"""
    headers, rows = table_cells(table)
    widths = [
        max(len(word) for text in (header, *column) for word in (text.split() or [""]))
        for header, column in zip(
            headers, zip(*rows, strict=True) if rows else [()] * len(headers), strict=True
        )
    ]
    for column, width in zip(table.columns, widths, strict=True):
        column.min_width = max(column.min_width or 0, width)
    return sum(widths) + 3 * len(widths) + 1


def _never_truncate(table: Table) -> None:
    for column in table.columns:
        column.overflow = "fold"


def print_table(console: Console, table: Table, fmt: TableFormat = TableFormat.TABLE) -> None:
    """Print `table` in `fmt` on `console`, whole."""
    if fmt is TableFormat.CSV:
        console.file.write(table_csv(table))
        console.file.flush()
        return
    if fmt is TableFormat.JSON:
        console.file.write(table_json(table).decode() + "\n")
        console.file.flush()
        return
    needed = _keep_words_whole(table)
    _never_truncate(table)
    if console.is_terminal and needed <= console.width:
        console.print(table)
        return
    # A pipe or file has no window to fit (use the width the table wants); a terminal
    # too narrow for the table gets it at its minimum width and soft-wraps the lines.
    width = Console(width=10_000).measure(table).maximum if not console.is_terminal else needed
    wide = Console(
        file=console.file,
        width=max(console.width, width),
        no_color=not console.is_terminal,
        highlight=False,
        force_terminal=console.is_terminal,
    )
    wide.print(table)


def print_tables(console: Console, tables: Sequence[Table], fmt: TableFormat) -> None:
    """Several tables; as JSON, one document (a list of tables) that any parser reads."""
    if fmt is TableFormat.JSON:
        docs = [_json_doc(table) for table in tables]
        console.file.write(orjson.dumps(docs, option=orjson.OPT_INDENT_2).decode() + "\n")
        console.file.flush()
        return
    for table in tables:
        print_table(console, table, fmt)
