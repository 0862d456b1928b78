"""The paper's Tables 1, 2, 3, 4, 15 and 16 (paper_spec §6) built only from evaluation records,
with the paper's numbers as reference rows beside ours, as Markdown and LaTeX.

Which records feed which table (record fields, see ``eval/records.py``):
* Table 1: ``tool_config == "paper_eval"``, paper prices, no preference; rows (toolset, model label).
* Table 2: ``tool_config == "unseen"`` (unseen tools/models, §2.4), paper prices, no preference.
* Table 4: the unseen DeepInfra price sheet (``prices == "unseen_deepinfra"``), no preference.
* Table 3: records with a preference, scored with the App. L metric against a baseline run
  (``rl.rewards.preference_metric``; cost in cents and latency in minutes inside the metric, the
  units the tables report); shown as 100 × (sum of R^e) / N per benchmark (the paper prints a
  "sum" without its rescaling, paper_spec §3.2: ours is the mean in %).
* Table 15: Table-1 records of the full toolset; calls per instance of each model / basic tool.
* Table 16: Table-1 τ² records.

Cell rules (our rows): accuracy = 100 × mean(correct) per benchmark; the τ²-Bench column = the mean
of the per-domain accuracies (airline, retail, telecom — those run); Cost (US cents) and Latency
(minutes) = the mean over HLE and FRAMES of each benchmark's mean per example (Table 1 caption:
"averaged between HLE and Frames"); Table 16 cost/latency = mean over the τ² domains of each
domain's mean; Table 15 = mean over the benchmark families run (HLE, FRAMES, τ²) of the mean calls
per instance. Every cell shows the number of examples behind it; "—" = not run by us, "–" = not
reported by the paper. Latency is ``latency_s`` (tool wall-clock, the release's definition).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from orchestra_jax.eval import paper_numbers as pn
from orchestra_jax.rl.rewards import preference_metric

NOT_RUN = "—"
TOOLSET_LABEL = {"none": "No tool", "basic": "Basic tools",
                 "full": "Basic tools, Specialized LLMs, Generalist LLMs"}
UNSEEN_PRICES = "unseen_deepinfra"
# Table 15 columns -> how a record counts them.
T15_MODELS = {"GPT-5": "gpt-5", "GPT-5-mini": "gpt-5-mini", "Qwen-32B": "Qwen/Qwen3-32B",
              "Coder-32B": "Qwen/Qwen2.5-Coder-32B-Instruct",
              "Math-72B": "Qwen/Qwen2.5-Math-72B-Instruct",
              "Math-7B": "Qwen/Qwen2.5-Math-7B-Instruct",
              "Llama-70B": "meta-llama/Llama-3.3-70B-Instruct"}
T15_BASIC = {"Local search": "local_search", "Web search": "web_search",
             "Code interpreter": "code_interpreter"}


@dataclasses.dataclass
class Cell:
    value: Optional[float]
    n: int = 0

    def text(self, digits: int = 1) -> str:
        return NOT_RUN if self.value is None else f"{self.value:.{digits}f} (n={self.n})"


@dataclasses.dataclass
class Table:
    """A rendered table: ``rows`` are (source, label cells, value cells)."""

    number: str
    title: str
    caption: str
    columns: list[str]
    label_columns: int
    rows: list[tuple[str, list[str], list[str]]]
    notes: list[str] = dataclasses.field(default_factory=list)
    cells: dict = dataclasses.field(default_factory=dict)   # (labels..., column) -> Cell (ours)


def family(benchmark: str) -> str:
    """``tau2-airline`` -> ``tau2``; ``frames`` / ``hle`` unchanged."""
    return "tau2" if benchmark.startswith("tau2-") else benchmark


def _mean(xs: Sequence[float]) -> Optional[float]:
    return float(np.mean(xs)) if len(xs) else None


def accuracy(records: Sequence[dict]) -> Cell:
    return Cell(100.0 * _mean([bool(r["correct"]) for r in records]), len(records)) \
        if records else Cell(None)


def tau2_accuracy(records: Sequence[dict]) -> Cell:
    """Mean over τ² domains of the per-domain accuracy (%)."""
    by = _by(records, lambda r: r["benchmark"])
    accs = [accuracy(v).value for k, v in by.items() if k.startswith("tau2-")]
    n = sum(len(v) for k, v in by.items() if k.startswith("tau2-"))
    return Cell(_mean(accs), n) if accs else Cell(None)


def mean_over(records: Sequence[dict], benchmarks: Callable[[str], bool],
              value: Callable[[dict], float]) -> Cell:
    """Mean over the matching benchmarks of each benchmark's mean per-example ``value``."""
    by = _by([r for r in records if benchmarks(r["benchmark"])], lambda r: r["benchmark"])
    if not by:
        return Cell(None)
    return Cell(_mean([_mean([value(r) for r in v]) for v in by.values()]),
                sum(len(v) for v in by.values()))


def cents(r: dict) -> float:
    return 100.0 * float(r["cost_usd"])


def minutes(r: dict) -> float:
    return float(r["latency_s"]) / 60.0


def _by(records: Iterable[dict], key: Callable[[dict], Any]) -> dict:
    out: dict = {}
    for r in records:
        out.setdefault(key(r), []).append(r)
    return out


def _select(records: Sequence[dict], table: str) -> list[dict]:
    def ok(r):
        pref = r.get("preference")
        if table == "3":
            return bool(pref)
        if pref:
            return False
        if table == "2":
            return r["tool_config"] == "unseen" and r["prices"] != UNSEEN_PRICES
        if table == "4":
            return r["prices"] == UNSEEN_PRICES and r["tool_config"] == "paper_eval"
        return r["tool_config"] == "paper_eval" and r["prices"] != UNSEEN_PRICES
    return [r for r in records if ok(r)]


def _row_key(r: dict, label_columns: int) -> tuple:
    label = r.get("model_label") or "ours"
    return (TOOLSET_LABEL.get(r["toolset"], r["toolset"]), label) if label_columns == 2 \
        else (label,)


def _assemble(number: str, ref: Mapping, ours: dict[tuple, list[str]], caption: str,
              title: str, notes: Sequence[str] = (), cells: Optional[dict] = None) -> Table:
    """Reference rows in the paper's order, each of our rows right after the paper row with the
    same labels, our other rows at the end."""
    k = ref["label_columns"]
    rows, used = [], set()
    for r in ref["rows"]:
        labels = tuple(r[:k])
        rows.append(("paper", list(labels), list(r[k:])))
        if labels in ours:
            rows.append(("ours", list(labels), ours[labels]))
            used.add(labels)
    for labels, vals in ours.items():
        if labels not in used:
            rows.append(("ours", list(labels), vals))
    return Table(number, title, caption, list(ref["columns"]), k, rows, list(notes), cells or {})


def _main_table(number: str, records: Sequence[dict], title: str, caption: str) -> Table:
    ref = pn.TABLES[number]
    k = ref["label_columns"]
    recs = _select(records, number)
    ours, cells = {}, {}
    for key, rs in _by(recs, lambda r: _row_key(r, k)).items():
        row = [accuracy([r for r in rs if r["benchmark"] == "hle"]),
               accuracy([r for r in rs if r["benchmark"] == "frames"]),
               tau2_accuracy(rs),
               mean_over(rs, lambda b: b in ("hle", "frames"), cents),
               mean_over(rs, lambda b: b in ("hle", "frames"), minutes)]
        ours[key] = [c.text() for c in row]
        for col, c in zip(ref["columns"][k:], row):
            cells[key + (col,)] = c
    return _assemble(number, ref, ours, caption, title, cells=cells)


def table1(records: Sequence[dict]) -> Table:
    return _main_table("1", records, "Comparison with baselines (paper Table 1)",
                       "HLE / FRAMES accuracy (%), τ²-Bench: mean of the per-domain success rates "
                       "(%); Cost in US cents and Latency in minutes, each averaged between HLE "
                       "and FRAMES (mean of the two benchmarks' per-example means). n = examples "
                       "behind the cell.")


def table2(records: Sequence[dict]) -> Table:
    return _main_table("2", records, "Unseen tools and models (paper Table 2)",
                       "As Table 1, with the unseen-tools configuration (tool_config=unseen).")


def table4(records: Sequence[dict]) -> Table:
    return _main_table("4", records, "Unseen pricing: DeepInfra prices (paper Table 4)",
                       "As Table 1, priced with configs/pricing/unseen_deepinfra.json.")


def table16(records: Sequence[dict]) -> Table:
    ref = pn.TABLE16
    recs = [r for r in _select(records, "1") if r["benchmark"].startswith("tau2-")]
    ours, cells = {}, {}
    for key, rs in _by(recs, lambda r: _row_key(r, 2)).items():
        tau2 = lambda b: b.startswith("tau2-")  # noqa: E731
        row = [tau2_accuracy(rs), mean_over(rs, tau2, cents), mean_over(rs, tau2, minutes)]
        ours[key] = [c.text() for c in row]
        for col, c in zip(ref["columns"][2:], row):
            cells[key + (col,)] = c
    return _assemble("16", ref, ours, "τ²-Bench success (%, mean over domains), Cost (US cents) "
                     "and Latency (minutes), each the mean over domains of the per-example mean.",
                     "τ²-Bench cost and latency (paper Table 16)", cells=cells)


def calls_per_instance(records: Sequence[dict], column: str) -> float:
    if column in T15_MODELS:
        get = lambda r: float((r.get("model_calls") or {}).get(T15_MODELS[column], 0))  # noqa
    else:
        get = lambda r: float((r.get("basic_calls") or {}).get(T15_BASIC[column], 0))  # noqa
    return float(np.mean([get(r) for r in records]))


def table15(records: Sequence[dict]) -> Table:
    ref = pn.TABLE15
    recs = [r for r in _select(records, "1") if r["toolset"] == "full"]
    ours, cells = {}, {}
    for key, rs in _by(recs, lambda r: _row_key(r, 1)).items():
        fams = _by(rs, lambda r: family(r["benchmark"]))
        vals = []
        for col in ref["columns"][1:]:
            c = Cell(_mean([calls_per_instance(v, col) for v in fams.values()]), len(rs))
            cells[key + (col,)] = c
            vals.append(c.text())
        ours[key] = vals
    return _assemble("15", ref, ours, "Average calls per tool per instance: the mean over the "
                     "benchmark families run (HLE, FRAMES, τ²) of the mean per example. Model "
                     "columns count every LLM call of that model (query writing, code writing, "
                     "answering, call_expert); search / code columns count executed calls.",
                     "Calls per tool (paper Table 15)", cells=cells)


# ---------------------------------------------------------------------------- Table 3

def _metric_inputs(recs: Sequence[dict], base: Mapping[tuple, dict]):
    names = recs[0]["preference"]["tool_names"]
    rows = [(r, base.get((r["benchmark"], r["task_id"], r["trial"]))) for r in recs]
    rows = [(r, b) for r, b in rows if b is not None]
    if not rows:
        return None
    counts = [[r["tool_calls"].get(n, 0) for n in names] for r, _ in rows]
    bcounts = [[b["tool_calls"].get(n, 0) for n in names] for _, b in rows]
    return dict(
        tool_counts=np.array(counts, np.float64), correct=np.array([r["correct"] for r, _ in rows]),
        cost=np.array([cents(r) for r, _ in rows]), latency=np.array([minutes(r) for r, _ in rows]),
        base_tool_counts=np.array(bcounts, np.float64),
        base_correct=np.array([b["correct"] for _, b in rows]),
        base_cost=np.array([cents(b) for _, b in rows]),
        base_latency=np.array([minutes(b) for _, b in rows]),
        preference=np.array([r["preference"]["vector"] for r, _ in rows], np.float64))


def preference_scores(records: Sequence[dict], baseline: Sequence[dict]) -> dict:
    """{(model label, family): (sum of R^e, N)} of the App. L metric against ``baseline``
    (matched by benchmark, task id and trial; cost in cents, latency in minutes)."""
    base = {(b["benchmark"], b["task_id"], b["trial"]): b for b in baseline}
    out: dict = {}
    prefs = _select(records, "3")
    for (label, bench), rs in _by(prefs, lambda r: (r.get("model_label") or "ours",
                                                    r["benchmark"])).items():
        for names, group in _by(rs, lambda r: tuple(r["preference"]["tool_names"])).items():
            inputs = _metric_inputs(group, base)
            if inputs is None:
                continue
            score, _ = preference_metric(**inputs)
            key = (label, family(bench))
            s, n = out.get(key, (0.0, 0))
            out[key] = (s + float(score), n + len(inputs["correct"]))
    return out


def table3(records: Sequence[dict], baseline: Optional[Sequence[dict]] = None) -> Table:
    ref = pn.TABLE3
    notes = []
    ours, cells = {}, {}
    if baseline:
        scores = preference_scores(records, baseline)
        for label in sorted({k[0] for k in scores}):
            vals = []
            for col, fam in zip(ref["columns"][1:], ("hle", "frames", "tau2")):
                s, n = scores.get((label, fam), (None, 0))
                c = Cell(None if s is None else 100.0 * s / n, n)
                cells[(label, col)] = c
                vals.append(c.text())
            ours[(label,)] = vals
    elif _select(records, "3"):
        notes.append("preference records found but no baseline run given (--baseline=DIR): "
                     "the App. L metric needs the starting checkpoint's run")
    return _assemble("3", ref, ours, "App. L preference score: 100 × Σ_e R^e / N against the "
                     "baseline run (cost in cents, latency in minutes inside the metric); "
                     "examples without a baseline record are left out.",
                     "Preference adherence (paper Table 3)", notes, cells)


def all_tables(records: Sequence[dict], baseline: Optional[Sequence[dict]] = None) -> list[Table]:
    return [table1(records), table2(records), table3(records, baseline), table4(records),
            table15(records), table16(records)]


# ---------------------------------------------------------------------------- rendering

def to_markdown(t: Table) -> str:
    head = ["Source"] + t.columns
    lines = [f"### Table {t.number}: {t.title}", "", t.caption, "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for src, labels, vals in t.rows:
        lines.append("| " + " | ".join([src] + labels + vals) + " |")
    lines += [""] + [f"Note: {n}" for n in t.notes]
    return "\n".join(lines).rstrip() + "\n"


_TEX = [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
        ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("τ²", r"$\tau^2$"), ("‡", r"$^\ddagger$"),
        ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"), ("—", "---"), ("–", "--"),
        ("×", r"$\times$"), ("Σ", r"$\Sigma$"), ("·", r"$\cdot$")]


def tex_escape(s: str) -> str:
    out = []
    for ch in _split_tokens(s):
        out.append(next((rep for k, rep in _TEX if ch == k), ch))
    return "".join(out)


def _split_tokens(s: str) -> list[str]:
    toks, i = [], 0
    while i < len(s):
        if s.startswith("τ²", i):
            toks.append("τ²")
            i += 2
        else:
            toks.append(s[i])
            i += 1
    return toks


def to_latex(t: Table) -> str:
    head = ["Source"] + t.columns
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{" + "l" * (1 + t.label_columns) + "r" * (len(head) - 1 -
                                                                         t.label_columns) + "}",
             r"\hline", " & ".join(tex_escape(h) for h in head) + r" \\", r"\hline"]
    for src, labels, vals in t.rows:
        lines.append(" & ".join(tex_escape(x) for x in [src] + labels + vals) + r" \\")
    lines += [r"\hline", r"\end{tabular}",
              r"\caption{" + tex_escape(f"{t.title}. {t.caption}") + "}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"
