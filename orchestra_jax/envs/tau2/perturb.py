"""Gold and perturbed tau2 trajectories for checking an evaluator (ours vs. upstream tau2).

A *case* is a JSON-serialisable dict::

    {"id": "telecom/<task id>/drop_action/1", "domain": "telecom", "category": "drop_action",
     "task": {...tasks.json entry...},
     "actions": [{"name", "arguments", "requestor"}],   # the episode's tool calls, in order
     "messages": ["..."],                               # the agent's texts to the user
     "termination_reason": "user_stop"}

:func:`gold_case` replays a task's gold actions (agent *and* user ones) and says its
``communicate_info``; :func:`perturbed_cases` derives deterministic variants, one idea each:

* ``drop_action`` — one gold action removed (a write: the state changes);
* ``alter_argument`` — one string argument of a gold action changed;
* ``string_ints`` / ``float_ints`` — every integer argument sent as ``"3"`` / ``3.0``;
* ``int_floats`` — every whole float argument sent as an int (``2.0`` → ``2``);
* ``comma_info`` — a ``communicate_info`` string that contains a comma (tau2 strips commas
  from messages only, so it can never match);
* ``comma_message`` — the agent's messages carry thousands separators (``1000`` → ``1,000``);
* ``wrong_requestor`` — a gold action sent by the other party (a user device action made by the
  agent fails, yet tau2's ACTION check matches it by name and arguments);
* ``no_messages`` — nothing said; ``duplicate_write`` — a write repeated;
* ``basis_all`` — the gold episode scored with every non-NL reward type in the basis.

Tasks are never mutated; NL assertions are removed from the reward basis (no judge offline).
"""

from __future__ import annotations

import copy
import re
from typing import Any, Iterable, Optional

__all__ = ["gold_case", "perturbed_cases", "CATEGORIES", "strip_nl_basis"]

CATEGORIES = ("gold", "drop_action", "alter_argument", "string_ints", "float_ints", "int_floats",
              "comma_info", "comma_message", "wrong_requestor", "no_messages",
              "duplicate_write", "basis_all")
_NON_NL = ["DB", "ENV_ASSERTION", "ACTION", "COMMUNICATE"]


def strip_nl_basis(task: dict) -> dict:
    """A copy of ``task`` whose reward basis has no ``NL_ASSERTION`` (kept non-empty)."""
    task = copy.deepcopy(task)
    crit = task.get("evaluation_criteria")
    if crit is not None:
        basis = crit.get("reward_basis")
        if basis is None:
            basis = ["DB", "COMMUNICATE"]
        basis = [b for b in basis if str(b).upper() != "NL_ASSERTION"] or ["DB"]
        crit["reward_basis"] = basis
    return task


def _gold_actions(task: dict) -> list[dict]:
    crit = task.get("evaluation_criteria") or {}
    return [{"name": a["name"], "arguments": copy.deepcopy(a.get("arguments") or {}),
             "requestor": a.get("requestor") or "assistant"} for a in crit.get("actions") or []]


def _info(task: dict) -> list[str]:
    return [str(s) for s in (task.get("evaluation_criteria") or {}).get("communicate_info") or []]


def _case(domain: str, task: dict, category: str, actions: list[dict], messages: list[str],
          n: int = 0) -> dict:
    return {"id": f"{domain}/{task.get('id')}/{category}/{n}", "domain": domain,
            "category": category, "task": task, "actions": actions, "messages": messages,
            "termination_reason": "user_stop"}


def gold_case(domain: str, task: dict) -> dict:
    task = strip_nl_basis(task)
    info = _info(task)
    return _case(domain, task, "gold", _gold_actions(task),
                 [f"To confirm: {s}." for s in info] or ["Your request is complete."])


def _map_numbers(value: Any, fn) -> tuple[Any, bool]:
    """Apply ``fn`` to every number inside ``value``; returns (new value, anything changed)."""
    if isinstance(value, bool):
        return value, False
    if isinstance(value, (int, float)):
        new = fn(value)
        return new, new is not value and (type(new) is not type(value) or new != value)
    if isinstance(value, dict):
        out, changed = {}, False
        for k, v in value.items():
            out[k], c = _map_numbers(v, fn)
            changed |= c
        return out, changed
    if isinstance(value, list):
        out, changed = [], False
        for v in value:
            nv, c = _map_numbers(v, fn)
            out.append(nv)
            changed |= c
        return out, changed
    return value, False


def _numbers_variant(actions: list[dict], fn) -> Optional[list[dict]]:
    out, any_changed = [], False
    for a in actions:
        args, changed = _map_numbers(a["arguments"], fn)
        any_changed |= changed
        out.append({**a, "arguments": args})
    return out if any_changed else None


def _first_string_arg(args: dict) -> Optional[str]:
    return next((k for k, v in args.items() if isinstance(v, str) and v), None)


def perturbed_cases(domain: str, task: dict, write_names: Iterable[str] = ()) -> list[dict]:
    """Deterministic perturbations of the gold case (the categories in the module docstring).

    ``write_names``: the domain's state-changing tool names (agent and user side), used to pick
    which action to drop/repeat; without them every action counts as a write.
    """
    gold = gold_case(domain, task)
    task, actions, messages = gold["task"], gold["actions"], gold["messages"]
    writes = set(write_names)
    write_idx = [i for i, a in enumerate(actions) if not writes or a["name"] in writes]
    cases = [gold]
    if write_idx:
        for n, i in enumerate(write_idx[:2]):
            cases.append(_case(domain, task, "drop_action", actions[:i] + actions[i + 1:],
                               messages, n))
        i = write_idx[-1]
        cases.append(_case(domain, task, "duplicate_write",
                           actions[:i + 1] + [copy.deepcopy(actions[i])] + actions[i + 1:],
                           messages))
    for i, a in enumerate(actions):
        key = _first_string_arg(a["arguments"])
        if key is not None:
            altered = copy.deepcopy(actions)
            altered[i]["arguments"][key] = altered[i]["arguments"][key] + "_x"
            cases.append(_case(domain, task, "alter_argument", altered, messages))
            break
    for cat, fn in (("string_ints", lambda v: str(v) if isinstance(v, int) else v),
                    ("float_ints", lambda v: float(v) if isinstance(v, int) else v),
                    ("int_floats", lambda v: int(v) if isinstance(v, float) and v.is_integer()
                     else v)):
        variant = _numbers_variant(actions, fn)
        if variant is not None:
            cases.append(_case(domain, task, cat, variant, messages))
    info = _info(task)
    if info:
        t2 = copy.deepcopy(task)
        t2["evaluation_criteria"]["communicate_info"] = [info[0] + ", indeed"] + info[1:]
        t2["evaluation_criteria"]["reward_basis"] = sorted(
            set(t2["evaluation_criteria"]["reward_basis"]) | {"COMMUNICATE"})
        cases.append(_case(domain, t2, "comma_info", actions,
                           [f"To confirm: {s}." for s in t2["evaluation_criteria"]
                            ["communicate_info"]]))
        commas = [re.sub(r"(\d)(\d{3})(?!\d)", r"\1,\2", m) for m in messages]
        if commas != messages:
            cases.append(_case(domain, task, "comma_message", actions, commas))
        cases.append(_case(domain, task, "no_messages", actions, []))
    if actions:  # prefer flipping a user (device) action: the agent cannot make it
        i = next((j for j, a in enumerate(actions) if a["requestor"] == "user"), 0)
        flipped = copy.deepcopy(actions)
        flipped[i]["requestor"] = "assistant" if actions[i]["requestor"] == "user" else "user"
        cases.append(_case(domain, task, "wrong_requestor", flipped, messages))
    t3 = copy.deepcopy(task)
    if t3.get("evaluation_criteria") is not None:
        t3["evaluation_criteria"]["reward_basis"] = list(_NON_NL)
        cases.append(_case(domain, t3, "basis_all", actions, messages))
    return cases
