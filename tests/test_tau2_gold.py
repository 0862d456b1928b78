"""Gold-action replay for EVERY airline/retail task file entry (+ mock), perturbations, and a
synthesized task built from DB entries (not in tasks.json) to show the code is task-agnostic."""

import json
import pathlib

import pytest

from orchestra_jax.envs.tau2 import evaluate, evaluate_actions, load_domain, pass_hat_k, replay

DOMAINS = ("airline", "retail")
SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def domains(shared_data):
    return {name: load_domain(shared_data / "tau2" / "domains" / name) for name in (*DOMAINS, "mock")}


def _task_ids(shared_data_dir, name):
    with open(shared_data_dir / "tau2" / "domains" / name / "tasks.json") as f:
        return [t["id"] for t in json.load(f)]


def _all_cases():
    """(domain, task id) for every task file entry. Missing data becomes one case that fails with a
    clear message (not a collection crash, and never an empty parametrization that passes)."""
    cases = []
    for name in DOMAINS:
        try:
            ids = _task_ids(SHARED_DATA, name)
        except (OSError, ValueError) as e:
            cases.append((name, f"<unreadable tasks.json: {e}>"))
            continue
        cases.extend((name, tid) for tid in ids)
    return cases


def _gold(task):
    crit = task["evaluation_criteria"]
    actions = [{"name": a["name"], "arguments": a["arguments"]} for a in crit.get("actions") or []]
    messages = [f"Here is the information you asked for: {c}." for c in crit.get("communicate_info") or []]
    return actions, messages


def _successful_writes(domain, task, actions):
    _, _, results = replay(domain, actions, initial_state=task.get("initial_state"))
    writes = domain.tools.write_tool_names()
    return [i for i, (a, r) in enumerate(zip(actions, results)) if a["name"] in writes and r.ok]


def _mutate(args: dict) -> dict:
    """A deterministic wrong argument: int+1, else shorten/alter a list, else alter a string."""
    args = json.loads(json.dumps(args))
    keys = sorted(args)
    for k in keys:
        v = args[k]
        if isinstance(v, int) and not isinstance(v, bool):
            args[k] = v + 1
            return args
    for k in keys:
        v = args[k]
        if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
            args[k] = v[:-1] if len(v) > 1 else [v[0] + "0"]
            return args
    for k in keys:
        if isinstance(args[k], str) and not k.endswith("_id"):
            args[k] = args[k] + " wrong"
            return args
    k = keys[0]
    args[k] = str(args[k]) + "_wrong"
    return args


@pytest.mark.parametrize("name,task_id", _all_cases())
def test_gold_replay_scores_one_and_perturbations_zero(domains, name, task_id):
    domain = domains[name]
    task = domain.task(task_id)
    actions, messages = _gold(task)
    info = evaluate(domain, task, actions, messages)
    assert info.reward == 1.0, (info.breakdown, info.notes)
    assert info.db_match is True

    writes = _successful_writes(domain, task, actions)
    if writes:
        last = writes[-1]
        missing = actions[:last] + actions[last + 1:]
        assert evaluate_actions(domain, task, missing, messages) == 0.0
        wrong = list(actions)
        wrong[last] = {"name": actions[last]["name"], "arguments": _mutate(actions[last]["arguments"])}
        assert evaluate_actions(domain, task, wrong, messages) == 0.0
    if task["evaluation_criteria"].get("communicate_info"):
        assert evaluate_actions(domain, task, actions, ["I cannot tell you that."]) == 0.0


def test_every_task_file_entry_was_covered(shared_data):
    n = {name: len(_task_ids(shared_data, name)) for name in DOMAINS}
    assert n["airline"] > 0 and n["retail"] > 0
    assert len(_all_cases()) == sum(n.values())


def test_mock_initial_state_paths(domains):
    mock = domains["mock"]
    for task in mock.tasks:
        actions, messages = _gold(task)
        info = evaluate(mock, task, actions, messages)
        basis = info.reward_basis
        if task["id"] == "update_task_with_history_and_env_assertions":
            # gold actions are empty but the env assertion wants task_2 completed
            assert info.reward == 0.0
            done = [{"name": "update_task_status",
                     "arguments": {"task_id": "task_2", "status": "completed"}}]
            assert evaluate_actions(mock, task, done, messages) == 1.0
        else:
            assert info.reward == 1.0, (task["id"], info)
        if "ACTION" in basis:
            assert evaluate_actions(mock, task, [], messages) == 0.0
    # initialization_data / initialization_actions / message_history all create task_2 first
    for tid in ("update_task_with_initialization_data", "update_task_with_initialization_actions",
                "update_task_with_message_history"):
        task = mock.task(tid)
        db, _, res = replay(mock, [], initial_state=task["initial_state"])
        assert db["tasks"]["task_2"]["status"] == "pending", tid
        assert "task_2" in db["users"]["user_1"]["tasks"]
        wrong = [{"name": "update_task_status", "arguments": {"task_id": "task_1",
                                                              "status": "completed"}}]
        assert evaluate_actions(mock, task, wrong, _gold(task)[1]) == 0.0


def test_synthesized_retail_task_from_db(domains):
    """A task that is not in tasks.json: cancel the first pending order (by id) of some user."""
    retail = domains["retail"]
    order_id = sorted(o for o, v in retail.db["orders"].items() if v["status"] == "pending")[0]
    order = retail.db["orders"][order_id]
    user = retail.db["users"][order["user_id"]]
    total = round(sum(p["amount"] for p in order["payment_history"]), 2)
    task = {"id": "synth-retail-1", "user_scenario": {"instructions": "cancel it"},
            "evaluation_criteria": {
                "actions": [
                    {"action_id": "a0", "name": "find_user_id_by_email",
                     "arguments": {"email": user["email"]}},
                    {"action_id": "a1", "name": "cancel_pending_order",
                     "arguments": {"order_id": order_id, "reason": "ordered by mistake"}}],
                "communicate_info": [f"{total}"], "nl_assertions": None}}
    good = [{"name": a["name"], "arguments": a["arguments"]}
            for a in task["evaluation_criteria"]["actions"]]
    msg = [f"Your order {order_id} is cancelled; ${total:,} will be refunded."]
    assert evaluate_actions(retail, task, good, msg) == 1.0
    wrong_reason = good[:1] + [{"name": "cancel_pending_order",
                                "arguments": {"order_id": order_id, "reason": "no longer needed"}}]
    assert evaluate_actions(retail, task, wrong_reason, msg) == 0.0
    assert evaluate_actions(retail, task, good[:1], msg) == 0.0
    assert evaluate_actions(retail, task, good, ["done"]) == 0.0
    # the ACTION basis, when asked for, checks the calls themselves (compare_args subset)
    task2 = json.loads(json.dumps(task))
    task2["evaluation_criteria"]["reward_basis"] = ["ACTION"]
    task2["evaluation_criteria"]["actions"][1]["compare_args"] = ["order_id"]
    assert evaluate_actions(retail, task2, wrong_reason, []) == 1.0
    assert evaluate_actions(retail, task2, good[:1], []) == 0.0


def test_synthesized_airline_task_from_db(domains):
    """Add a bag to a reservation and send a certificate — built from DB entries."""
    airline = domains["airline"]
    users = airline.db["users"]
    rid = sorted(r for r, v in airline.db["reservations"].items()
                 if v["cabin"] == "economy" and v.get("status") is None
                 and any(m["source"] == "credit_card"
                         for m in users[v["user_id"]]["payment_methods"].values()))[0]
    res = airline.db["reservations"][rid]
    user = airline.db["users"][res["user_id"]]
    card = sorted(p for p, m in user["payment_methods"].items() if m["source"] == "credit_card")[0]
    actions = [
        {"name": "get_reservation_details", "arguments": {"reservation_id": rid}},
        {"name": "update_reservation_baggages",
         "arguments": {"reservation_id": rid, "total_baggages": res["total_baggages"] + 1,
                       "nonfree_baggages": res["nonfree_baggages"] + 1, "payment_id": card}},
        {"name": "send_certificate", "arguments": {"user_id": res["user_id"], "amount": 50}},
    ]
    task = {"id": "synth-airline-1", "evaluation_criteria": {
        "actions": [dict(a, action_id=str(i)) for i, a in enumerate(actions)],
        "communicate_info": ["50"]}}
    assert evaluate_actions(airline, task, actions, ["A $50 fee was charged."]) == 1.0
    wrong = actions[:2] + [{"name": "send_certificate",
                            "arguments": {"user_id": res["user_id"], "amount": 100}}]
    assert evaluate_actions(airline, task, wrong, ["A $50 fee was charged."]) == 0.0
    # order of independent writes does not matter for the DB hash
    assert evaluate_actions(airline, task, [actions[2], actions[0], actions[1]], ["50"]) == 1.0


def test_pass_hat_k():
    rewards = {"a": [1, 1, 0, 1], "b": [0, 0, 0, 1], "c": [1, 1, 1, 1]}
    # task a: c=3,n=4 ; b: c=1 ; c: c=4
    assert pass_hat_k(rewards, 1) == pytest.approx((3 / 4 + 1 / 4 + 1) / 3)
    assert pass_hat_k(rewards, 2) == pytest.approx((3 / 6 + 0 + 1) / 3)
    assert pass_hat_k(rewards, 4) == pytest.approx((0 + 0 + 1) / 3)
    with pytest.raises(ValueError):
        pass_hat_k(rewards, 5)
    with pytest.raises(ValueError):
        pass_hat_k(rewards, 0)


def test_premature_termination_and_nl_judge(domains):
    mock = domains["mock"]
    task = mock.task("create_task_1")
    actions, messages = _gold(task)
    assert evaluate_actions(mock, task, actions, messages, termination_reason="max_steps") == 0.0
    task = json.loads(json.dumps(mock.task("create_task_1_nl_eval")))
    task["evaluation_criteria"]["reward_basis"] = ["NL_ASSERTION"]
    info = evaluate(mock, task, [], ["hello"])
    assert info.reward == 1.0 and any("no nl_judge" in n for n in info.notes)
    seen = {}

    def judge(assertions, conversation, t):
        seen["n"] = len(assertions)
        return [True, "compliment" in conversation[-1]["content"]]

    assert evaluate_actions(mock, task, [], ["you get a compliment"], nl_judge=judge) == 1.0
    assert evaluate_actions(mock, task, [], ["no"], nl_judge=judge) == 0.0
    assert seen["n"] == 2


def test_evaluate_accepts_domain_name_and_task_id(domains):
    task = domains["retail"].task("0")
    actions, messages = _gold(task)
    assert evaluate_actions("retail", "0", actions, messages) == 1.0
    assert evaluate_actions("retail", "0", actions[:-1], messages) == 0.0


def test_wrongly_shaped_inputs_are_clear_errors(domains):
    task = domains["retail"].task("0")
    for actions, msgs, needle in ((["get_order_details"], [], r"actions\[0\] must be a dict"),
                                  ([{"arguments": {}}], [], r"actions\[0\] must be a dict"),
                                  ("get_order_details", [], "actions must be a list"),
                                  ([], None, "agent_messages must be a list"),
                                  ([], "hello", "agent_messages must be a list")):
        with pytest.raises(TypeError, match=needle):
            evaluate_actions(domains["retail"], task, actions, msgs)
    with pytest.raises(TypeError, match="task must be a tasks.json entry"):
        evaluate_actions(domains["retail"], 0, [], [])
    # a call the domain rejects is not an input error: it replays as a failed call (reward 0)
    assert evaluate_actions(domains["retail"], task, [{"name": "nope", "arguments": [1]}], []) == 0.0
