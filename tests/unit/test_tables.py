"""Printed result tables keep every figure whole, on a pipe, on a narrow terminal, and as
CSV or JSON (issue 10, item 13: `inflection plan ... | cat` used to print `276.…`)."""

from __future__ import annotations

import argparse
import io

import orjson
from rich.console import Console
from rich.table import Table

from orchestrator.tables import TableFormat, add_format_flag, format_of, print_table, print_tables

FIGURES = ("276.123456", "0.000123", "1828.5")


def _wide_table() -> Table:
    table = Table(title="inflection plan")
    for header in ("GPU", "tasks/s per replica", "output tok/s per GPU", "$ per M tokens"):
        table.add_column(header, justify="right")
    table.add_row("h100", FIGURES[0], FIGURES[2], FIGURES[1])
    table.add_row("[bold]b200[/bold]", "12.5", "3000.25", "0.75")
    return table


def _printed(console_kwargs: dict[str, object], fmt: TableFormat = TableFormat.TABLE) -> str:
    out = io.StringIO()
    console = Console(file=out, **console_kwargs)  # type: ignore[arg-type]
    print_table(console, _wide_table(), fmt)
    return out.getvalue()


def test_a_pipe_of_40_columns_gets_every_figure_whole() -> None:
    text = _printed({"width": 40})
    assert "…" not in text
    for figure in FIGURES:
        assert figure in text


def test_a_narrow_terminal_gets_every_figure_whole() -> None:
    text = _printed({"width": 30, "force_terminal": True, "color_system": None})
    assert "…" not in text
    for figure in FIGURES:
        assert figure in text


def test_without_the_helper_rich_would_have_cut_the_figures() -> None:
    # The failure this module exists for: the same table printed plainly to 40 columns.
    out = io.StringIO()
    Console(file=out, width=40).print(_wide_table())
    assert not all(figure in out.getvalue() for figure in FIGURES)


def test_csv_and_json_carry_the_plain_cells() -> None:
    csv_text = _printed({"width": 20}, TableFormat.CSV)
    assert csv_text.splitlines()[0] == (
        "GPU,tasks/s per replica,output tok/s per GPU,$ per M tokens"
    )
    assert csv_text.splitlines()[2] == "b200,12.5,3000.25,0.75"
    doc = orjson.loads(_printed({"width": 20}, TableFormat.JSON))
    assert doc["title"] == "inflection plan"
    assert doc["rows"][0]["tasks/s per replica"] == FIGURES[0]


def test_the_format_flag() -> None:
    parser = argparse.ArgumentParser()
    add_format_flag(parser)
    assert format_of(parser.parse_args([])) is TableFormat.TABLE
    assert format_of(parser.parse_args(["--format", "csv"])) is TableFormat.CSV


def test_several_tables_as_json_are_one_document() -> None:
    out = io.StringIO()
    second = Table(title="per agent")
    second.add_column("agent")
    second.add_row("react")
    print_tables(Console(file=out), [_wide_table(), second], TableFormat.JSON)
    docs = orjson.loads(out.getvalue())
    assert [doc["title"] for doc in docs] == ["inflection plan", "per agent"]
