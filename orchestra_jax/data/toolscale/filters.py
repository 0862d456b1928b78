"""Quality filters for synthesized tasks (paper_spec §5.1) and dedup.

A task is kept only if (1) its gold actions all execute without error, (2) they change the
database, (3) replaying them with the communicate info scores 1.0 under the tau2 evaluator and
(4) doing nothing (no actions, no messages) scores below 1.0. The paper's optional pass@k filter
("LLMs cannot solve it at pass@8" removes it) is :func:`pass_at_k_filter`, given any async
solver. Dedup keys on the gold write actions (order-insensitive) — two tasks that demand the
same database change are one task.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Optional, Sequence

from orchestra_jax.envs.tau2 import Domain, db_hash, evaluate, replay

__all__ = ["check_task", "gold_messages", "dedup_key", "dedup", "pass_at_k_filter",
           "replay_new_ids"]


def gold_messages(task: dict) -> list[str]:
    crit = task.get("evaluation_criteria") or {}
    return [f"Here is the information you asked for: {c}." for c in crit.get("communicate_info")
            or []]


def _gold_actions(task: dict) -> list[dict]:
    return [{"name": a["name"], "arguments": a.get("arguments") or {}}
            for a in (task.get("evaluation_criteria") or {}).get("actions") or []]


def replay_new_ids(domain: Domain, actions: Sequence[dict], indices: Sequence[int],
                   id_fields: Sequence[str]) -> Optional[list[str]]:
    """Ids created by the create actions at ``indices`` when the gold actions replay."""
    _, _, results = replay(domain, actions)
    out = []
    for i, f in zip(indices, id_fields):
        if i is None or i >= len(results) or not results[i].ok or \
                not isinstance(results[i].value, dict):
            return None
        out.append(str(results[i].value.get(f)))
    return out


def check_task(domain: Domain, task: dict) -> tuple[bool, str]:
    """(kept, reason) for one task under the filters above."""
    actions = _gold_actions(task)
    if not actions:
        return False, "no gold actions"
    db, user_db, results = replay(domain, actions, initial_state=task.get("initial_state"))
    errors = [f"{r.name}: {r.error}" for r in results if not r.ok]
    if errors:
        return False, f"gold action failed: {errors[0]}"
    if db_hash([db, user_db]) == db_hash([domain.db, domain.user_db]):
        return False, "gold actions do not change the database"
    info = evaluate(domain, task, actions, gold_messages(task))
    if info.reward != 1.0:
        return False, f"gold replay scores {info.reward} ({info.breakdown})"
    if evaluate(domain, task, [], []).reward >= 1.0:
        return False, "solved by doing nothing"
    return True, "ok"


def dedup_key(task: dict) -> str:
    writes = sorted(json.dumps(a, sort_keys=True) for a in _gold_actions(task))
    return json.dumps(writes)


def dedup(tasks: Sequence[dict]) -> tuple[list[dict], int]:
    seen, out = set(), []
    for t in tasks:
        k = dedup_key(t)
        if k not in seen:
            seen.add(k)
            out.append(t)
    return out, len(tasks) - len(out)


async def pass_at_k_filter(tasks: Sequence[dict], solve: Callable[[dict], Awaitable[float]],
                           k: int = 8) -> tuple[list[dict], list[dict]]:
    """Keep tasks some of ``k`` attempts of ``solve(task) -> reward`` solves (reward 1.0).

    [P] pass@8 with a strong LLM; ``solve`` runs one episode (e.g. ``FunctionCallingEnv`` with
    an expert as the agent and an LLM user) and returns its reward. Returns (kept, dropped).
    """
    kept, dropped = [], []
    for t in tasks:
        ok = False
        for _ in range(k):
            if await solve(t) >= 1.0:
                ok = True
                break
        (kept if ok else dropped).append(t)
    return kept, dropped
