"""Domain loading: tau2 domains (json/toml), all 10 ToolScale DBs, env-var roots, clear errors."""

import json
import shutil

import pytest

from orchestra_jax.envs.tau2 import DomainError, ToolSet, load_domain, register_tools
from orchestra_jax.envs.tau2.domain import default_data_roots
from orchestra_jax.envs.tau2.env import FunctionCallingEnv
from orchestra_jax.envs.user_sim import ScriptedUser

TOOLSCALE = ("bank", "basketball", "ecommerce", "medicine", "movie", "railway", "restaurant",
             "school", "travel", "weather")


def test_tau2_domains_by_name_and_path(shared_data):
    for name, n_tools in (("airline", 14), ("retail", 15), ("mock", 4)):
        d = load_domain(name)
        assert d.name == name and len(d.tools) == n_tools and d.tasks and d.policy.strip()
        assert d.path.resolve() == (shared_data / "tau2" / "domains" / name).resolve()
    a = load_domain(shared_data / "tau2" / "domains" / "airline")
    assert set(a.db) == {"flights", "users", "reservations"}
    assert a.split["train"] and len(a.tasks_in_split("train")) <= len(a.split["train"])
    fresh = a.fresh_db()
    fresh["users"].clear()
    assert a.db["users"] and a.fresh_db()["users"]        # pristine copy untouched


def test_toml_database_and_user_db(shared_data):
    tel = load_domain("telecom")
    assert isinstance(tel.db, dict) and tel.db                       # db.toml via tomllib
    assert isinstance(tel.user_db, dict)                             # user_db.toml
    root = shared_data / "tau2" / "domains" / "telecom"
    # tau2's composed policy: main policy + the tech-support manual (or workflow)
    assert tel.policy == (f"<main_policy>\n{(root / 'main_policy.md').read_text()}\n</main_policy>"
                          f"\n<tech_support_policy>\n{(root / 'tech_support_manual.md').read_text()}"
                          f"\n</tech_support_policy>")
    wf = load_domain("telecom-workflow")
    assert (root / "tech_support_workflow.md").read_text() in wf.policy and wf.name == "telecom"
    assert len(tel.tools) == 13 and len(tel.user_tools) == 30 and not tel.tools_note
    assert tel.user_db["device"]["vpn_details"] is None                 # model defaults filled


@pytest.mark.parametrize("name", TOOLSCALE)
def test_toolscale_domains_load(shared_data, name):
    d = load_domain(name)
    with open(shared_data / "toolscale_envs" / name / "db.json") as f:
        assert d.db == json.load(f)
    assert d.policy.strip() and d.tasks == []
    assert len(d.tools) == 0
    with pytest.raises(DomainError, match=f"domain '{name}'.*no tool implementations"):
        d.require_tools()
    with pytest.raises(DomainError, match="no tool implementations"):
        FunctionCallingEnv(d, {"id": "x"}, ScriptedUser([]))


def test_register_tools_for_a_new_domain(shared_data):
    from orchestra_jax.envs.tau2.toolset import FunctionTool
    tool = FunctionTool("count_clients", "Number of clients.",
                        {"type": "object", "properties": {}}, lambda db: len(db["clients"]))
    register_tools("bank", lambda: ToolSet([tool]))
    try:
        bank = load_domain("bank")
        assert bank.tools.execute(bank.fresh_db(), "count_clients", {}).observation == \
            str(len(bank.db["clients"]))
    finally:
        from orchestra_jax.envs.tau2 import domain as dom
        dom._TOOL_FACTORIES.pop("bank")


def test_env_var_root_and_clear_errors(tmp_path, monkeypatch, shared_data):
    root = tmp_path / "tau2"
    (root / "domains" / "tiny").mkdir(parents=True)
    (root / "domains" / "tiny" / "db.toml").write_text('[users.u1]\nname = "A"\n')
    (root / "domains" / "tiny" / "policy.md").write_text("# tiny")
    monkeypatch.setenv("ORCHESTRA_TAU2_DATA", str(root))
    assert default_data_roots()[0] == root / "domains"
    tiny = load_domain("tiny")
    assert tiny.db == {"users": {"u1": {"name": "A"}}} and tiny.tasks == []
    with pytest.raises(DomainError, match="domain 'nope' not found; looked in"):
        load_domain("nope")
    with pytest.raises(DomainError, match="does not exist"):
        load_domain(tmp_path / "missing" / "dir")
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(DomainError, match="no db.json or db.toml"):
        load_domain(bad)
    (bad / "db.json").write_text("{not json")
    with pytest.raises(DomainError, match="cannot parse database"):
        load_domain(bad)
    (bad / "db.json").write_text("{}")
    with pytest.raises(DomainError, match="no policy.md"):
        load_domain(bad)
    (bad / "policy.md").write_text("p")
    (bad / "tasks.json").write_text('{"a": 1}')
    with pytest.raises(DomainError, match="JSON list of tasks"):
        load_domain(bad)
    # a copied domain directory keeps its tools (chosen by directory name)
    copy = tmp_path / "airline"
    copy.mkdir()
    for f in ("policy.md", "tasks.json"):
        shutil.copy(shared_data / "tau2" / "domains" / "airline" / f, copy / f)
    (copy / "db.json").write_text(json.dumps({"flights": {}, "users": {}, "reservations": {}}))
    a = load_domain(copy)
    assert len(a.tools) == 14
    assert a.tools.execute(a.fresh_db(), "get_user_details", {"user_id": "x"}).observation \
        == "Error: User x not found"
