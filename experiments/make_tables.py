"""Evaluation records → the paper's Tables 1, 2, 3, 4, 15, 16 (Markdown + LaTeX) and figures.

    .venv/bin/python experiments/make_tables.py --records=DIR [--records=DIR2 …] \
        [--baseline=DIR_BASE …] --out=OUT

Writes OUT/table{1,2,3,4,15,16}.{md,tex}, OUT/fig_accuracy_cost.{png,svg},
OUT/fig_tool_calls.{png,svg}. --baseline: the starting checkpoint's runs (Table 3, App. L).
"""
from absl import app, flags

from orchestra_jax.eval.report import write_report

_RECORDS = flags.DEFINE_multi_string("records", None, "run directory (or records.jsonl)",
                                     required=True)
_BASELINE = flags.DEFINE_multi_string("baseline", [], "baseline run directories (Table 3)")
_OUT = flags.DEFINE_string("out", "runs/tables", "output directory")


def main(argv) -> None:
    del argv
    for p in write_report(_RECORDS.value, _OUT.value, baseline=_BASELINE.value):
        print(p)


if __name__ == "__main__":
    app.run(main)
