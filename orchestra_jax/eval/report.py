"""Records directories → every table (Markdown + LaTeX) and figure in one output directory."""

from __future__ import annotations

import os
import pathlib
from typing import Sequence, Union

from orchestra_jax.eval.figures import accuracy_cost_figure, tool_call_figure
from orchestra_jax.eval.records import load_records
from orchestra_jax.eval.tables import all_tables, to_latex, to_markdown

PathLike = Union[str, os.PathLike]


def read_runs(paths: Sequence[PathLike]) -> list[dict]:
    out = []
    for p in paths:
        out.extend(load_records(p))
    return out


def write_report(records: Sequence[PathLike], out: PathLike, *,
                 baseline: Sequence[PathLike] = ()) -> list[pathlib.Path]:
    recs = read_runs(records)
    base = read_runs(baseline) if baseline else None
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for t in all_tables(recs, base):
        for ext, render in (("md", to_markdown), ("tex", to_latex)):
            p = out / f"table{t.number}.{ext}"
            p.write_text(render(t), encoding="utf-8")
            written.append(p)
    written += accuracy_cost_figure(recs, out)
    written += tool_call_figure(recs, out)
    return written
