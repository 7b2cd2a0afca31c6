"""What the HTML and JSON reports of `inflection simulate` (orchestrator.sim.report) and
`inflection load` (loadtests.report) share, so both look and serialize alike: the page
style, JSON serialization of configs, and matplotlib figures as inline SVG.

matplotlib is imported inside the functions that draw only: the CLI and SDK import this
module and must stay quick to import.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1100px;padding:0 1rem;color:#1b1f24;line-height:1.4}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;
border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
.sub{color:#57606a;margin-top:0}
table.summary{border-collapse:collapse;font-variant-numeric:tabular-nums}
table.summary th,table.summary td{padding:.25rem .8rem;border-bottom:1px solid #eaeef2}
table.summary th{text-align:left;background:#f6f8fa}
table.summary td.num,table.summary th.num{text-align:right}
figure.plot{margin:1rem 0}figure.plot svg{width:100%;height:auto;display:block}
figcaption{color:#57606a;font-size:.9rem}
.verdict{font-size:1.1rem;font-weight:600;padding:.6rem .8rem;border-radius:6px;
background:#f6f8fa;border-left:6px solid #8c959f}
.verdict.met{background:#dafbe1;border-color:#1a7f37}
.verdict.missed{background:#ffebe9;border-color:#cf222e}
pre{background:#f6f8fa;padding:.8rem;overflow:auto;font-size:.85rem}
""".strip()


def json_default(value: Any) -> Any:
    """Types a config may hold that orjson does not serialize itself."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):  # MappingProxyType, frozen dicts
        return dict(value)
    if isinstance(value, PathLike):
        return str(Path(value))
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to the report")


def dumps(value: Any, *, indent: bool = True, lenient: bool = False) -> bytes:
    """`value` as JSON (orjson; numpy values and configs via json_default). `lenient`:
    values with no JSON form are written as their text instead of failing."""
    option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    return orjson.dumps(
        value,
        default=_lenient_default if lenient else json_default,
        option=option | (orjson.OPT_INDENT_2 if indent else 0),
    )


def _lenient_default(value: Any) -> Any:
    try:
        return json_default(value)
    except TypeError:
        return str(value)


def new_figure(xlabel: str = "simulated time (s)") -> tuple[Figure, Axes]:
    """A bare matplotlib Figure (not pyplot: no global state, no GUI backend, safe in
    threads) with one gridded Axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlabel(xlabel)
    ax.grid(True, color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)
    return fig, ax


def no_data(ax: Axes, what: str) -> None:
    """'no <what>' in the middle of an empty plot."""
    ax.text(
        0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes, color="#777777"
    )


_ID = re.compile(r'\bid="([^"]+)"')
_URL_REF = re.compile(r"url\(#([^)]+)\)")
_HREF_REF = re.compile(r'((?:xlink:)?href)="#([^"]+)"')


def svg(fig: Figure, key: str) -> str:
    """The figure as an inline <svg> element: no XML prolog, DOCTYPE or RDF metadata
    (they carry external URIs), text as text, and ids prefixed with `key` so that several
    plots can share one HTML document without id clashes."""
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "inflection"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue().decode()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    text = _ID.sub(lambda m: f'id="{key}-{m.group(1)}"', text)
    text = _URL_REF.sub(lambda m: f"url(#{key}-{m.group(1)})", text)
    text = _HREF_REF.sub(lambda m: f'{m.group(1)}="#{key}-{m.group(2)}"', text)
    return text.replace("<svg ", f'<svg role="img" aria-label="{html.escape(key)} plot" ', 1)
