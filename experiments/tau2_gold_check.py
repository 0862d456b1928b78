"""Replay every task's gold actions through our tau2 tools + evaluator and report the scores.

    .venv/bin/python experiments/tau2_gold_check.py                  # airline retail telecom
    .venv/bin/python experiments/tau2_gold_check.py airline --verbose
    ORCHESTRA_TAU2_DATA=/path/to/tau2 .venv/bin/python experiments/tau2_gold_check.py retail

Each task is scored with its gold actions (agent and, in telecom, user-side device actions, each
run on its requestor's side) as the episode's calls and its ``communicate_info``
strings as the agent's messages; a correct environment gives 1.0 for every task whose reward
does not depend on an NL judge or on env assertions the gold actions do not satisfy. Gold
actions that fail (some tasks include deliberately failing lookups or writes, as in tau2) are
listed. Exit status 1 when any task scores below 1.0.
"""

from __future__ import annotations

import argparse
import sys
import time

from orchestra_jax.envs.tau2 import evaluate, load_domain


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("domains", nargs="*", default=["airline", "retail", "telecom"])
    ap.add_argument("--verbose", action="store_true", help="list failing gold calls per task")
    args = ap.parse_args(argv)
    bad = 0
    for name in args.domains:
        domain = load_domain(name)
        t0 = time.perf_counter()
        scores, with_errors = [], 0
        for task in domain.tasks:
            crit = task.get("evaluation_criteria") or {}
            actions = [{"name": a["name"], "arguments": a["arguments"],
                        "requestor": a.get("requestor") or "assistant"}
                       for a in crit.get("actions") or []]
            info = evaluate(domain, task, actions, list(crit.get("communicate_info") or []),
                            termination_reason="user_stop")
            scores.append(info.reward)
            if info.gold_errors:
                with_errors += 1
                if args.verbose:
                    print(f"  {name}/{task['id']}: failing gold calls: {info.gold_errors}")
            if info.reward < 1.0:
                bad += 1
                print(f"  {name}/{task['id']}: reward {info.reward} {info.breakdown} {info.notes}")
        dt = time.perf_counter() - t0
        print(f"{name}: {sum(s == 1.0 for s in scores)}/{len(scores)} tasks score 1.0; "
              f"{with_errors} with failing gold calls; {dt:.1f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
