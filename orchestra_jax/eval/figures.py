"""The paper's figures from evaluation records (matplotlib, Agg backend; PNG and SVG).

* Accuracy vs cost (Fig. 5/6 style): one point per (model label, toolset, benchmark) of our
  Table-1 records — x = mean cost per example in US dollars, y = accuracy (%) — beside the
  paper's HLE accuracy–cost curves (paper_spec §6.10, read off the plot, hollow markers).
* Tool-call distribution (Fig. 5 pie / Table 15 style): each model's calls per instance,
  normalised to 100% over the Table 15 columns, for the paper's rows and ours.
"""

from __future__ import annotations

import os
import pathlib
from typing import Sequence, Union

import numpy as np

from orchestra_jax.eval import paper_numbers as pn
from orchestra_jax.eval.tables import TOOLSET_LABEL, _by, _select, family, table15

PathLike = Union[str, os.PathLike]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def accuracy_cost_figure(records: Sequence[dict], out_dir: PathLike,
                         name: str = "fig_accuracy_cost") -> list[pathlib.Path]:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model, pts in pn.FIGURE6_POINTS.items():
        xs, ys = zip(*pts)
        ax.plot(xs, ys, "o--", mfc="none", alpha=0.6, label=f"paper HLE: {model}")
    ours = _by(_select(records, "1"), lambda r: (r.get("model_label") or "ours", r["toolset"],
                                                  family(r["benchmark"])))
    for (label, toolset, fam), rs in sorted(ours.items()):
        x = float(np.mean([r["cost_usd"] for r in rs]))
        y = 100.0 * float(np.mean([bool(r["correct"]) for r in rs]))
        ax.scatter([x], [y], marker="*", s=140, zorder=3,
                   label=f"ours {label} ({TOOLSET_LABEL.get(toolset, toolset)[:11]}, {fam}, "
                         f"n={len(rs)})")
    ax.set_xlabel("cost per example (US $)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy vs cost (paper points: HLE at 10/20/50/100 turns)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    return _save(fig, plt, out_dir, name)


def tool_call_figure(records: Sequence[dict], out_dir: PathLike,
                     name: str = "fig_tool_calls") -> list[pathlib.Path]:
    plt = _plt()
    cols = pn.TABLE15["columns"][1:]
    rows = [(f"paper: {r[0]}", [float(x) for x in r[1:]]) for r in pn.TABLE15["rows"]]
    t = table15(records)
    for src, labels, _ in t.rows:
        if src == "ours":
            rows.append((f"ours: {labels[0]}", [t.cells[(labels[0], c)].value or 0.0
                                                 for c in cols]))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    left = np.zeros(len(rows))
    cmap = plt.get_cmap("tab10")
    for j, col in enumerate(cols):
        share = np.array([v[j] / sum(v) * 100 if sum(v) > 0 else 0.0 for _, v in rows])
        ax.barh(range(len(rows)), share, left=left, color=cmap(j % 10), label=col)
        left += share
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("share of tool calls (%)")
    ax.set_title("Tool-call distribution (Table 15 rows, normalised)")
    ax.legend(fontsize=6, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return _save(fig, plt, out_dir, name)


def _save(fig, plt, out_dir: PathLike, name: str) -> list[pathlib.Path]:
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    for p in paths:
        fig.savefig(p, dpi=120)
    plt.close(fig)
    return paths
