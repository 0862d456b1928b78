"""Loading a tau2-format domain: database, policy, tasks and its tools.

A domain directory holds ``db.json`` or ``db.toml`` (the agent-side database), ``policy.md``
(or ``main_policy.md`` as in telecom), optionally ``tasks.json`` / ``split_tasks.json`` and a
user-side ``user_db.toml``/``user_db.json``. The ToolScale environments
(``shared/data/toolscale_envs/<domain>``) are the same format without tasks.

``load_domain("airline")`` resolves a bare name, in order, under
``$ORCHESTRA_TAU2_DATA/domains/<name>``, ``$ORCHESTRA_TOOLSCALE_DATA/<name>``, and then the
repository's sibling ``shared/data/{tau2/domains,toolscale_envs}/<name>``; any existing
directory path is used as is. The domain's tools are chosen by its *name* (the directory's
basename): ``airline``, ``retail``, ``telecom`` (with user-side device tools, user DB and env
sync: dual control) and ``mock`` have implementations; a directory with a
``tools.json`` tool spec (synthesized ToolScale domains, see ``spec_tools``) gets executable
tools from it; other domains load with an empty :class:`ToolSet` and ``tools_note`` saying why
(:meth:`Domain.require_tools` raises it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import pickle
import tomllib
from typing import Any, Callable, Optional, Union

from orchestra_jax.envs.tau2.toolset import ToolSet

__all__ = ["Domain", "DomainError", "load_domain", "default_data_roots", "register_tools",
           "known_tool_domains"]

_REPO = pathlib.Path(__file__).resolve().parents[3]


class DomainError(FileNotFoundError):
    """A domain (or one of its required files) could not be found or parsed."""


def _airline() -> ToolSet:
    from orchestra_jax.envs.tau2.airline import airline_tools
    return ToolSet(airline_tools(), strict_schema=False)   # raw arguments, as tau2


def _retail() -> ToolSet:
    from orchestra_jax.envs.tau2.retail import retail_tools
    return ToolSet(retail_tools(), strict_schema=False)


def _mock() -> ToolSet:
    from orchestra_jax.envs.tau2.mock import mock_toolset
    return mock_toolset()


def _telecom() -> ToolSet:
    from orchestra_jax.envs.tau2.telecom import telecom_toolset
    return telecom_toolset()


_TOOL_FACTORIES: dict[str, Callable[[], ToolSet]] = {
    "airline": _airline, "retail": _retail, "mock": _mock, "telecom": _telecom}

# Bare names that load another domain's directory with a policy variant (tau2's registry names).
_ALIASES = {"telecom-workflow": ("telecom", "workflow")}


def _setup_telecom(domain: "Domain", policy_type: str) -> None:
    """Dual control: user (device) tools, the full user DB, env sync and the composed policy
    ``<main_policy>…</main_policy>`` + ``<tech_support_policy>`` (manual or workflow), as tau2."""
    from orchestra_jax.envs.tau2.telecom import normalise_telecom_db, telecom_sync
    from orchestra_jax.envs.tau2.telecom_user import normalise_user_db, telecom_user_toolset
    domain.db = normalise_telecom_db(domain.db)
    domain.user_db = normalise_user_db(domain.user_db)
    domain.user_tools = telecom_user_toolset()
    domain.sync = telecom_sync
    files = {"manual": "tech_support_manual.md", "workflow": "tech_support_workflow.md"}
    if policy_type not in files:
        raise DomainError(f"telecom policy_type must be one of {sorted(files)}, got "
                          f"{policy_type!r}")
    support = domain.path / files[policy_type]
    if support.is_file():
        domain.policy = (f"<main_policy>\n{domain.policy}\n</main_policy>\n<tech_support_policy>"
                         f"\n{support.read_text(encoding='utf-8')}\n</tech_support_policy>")


_DOMAIN_SETUP: dict[str, Callable[["Domain", str], None]] = {"telecom": _setup_telecom}


def register_tools(domain_name: str, factory: Callable[[], ToolSet]) -> None:
    """Register the tool implementations for a domain name (e.g. synthesized ToolScale tools)."""
    _TOOL_FACTORIES[domain_name] = factory


def known_tool_domains() -> list[str]:
    return sorted(_TOOL_FACTORIES)


@dataclasses.dataclass
class Domain:
    """A loaded domain. ``db`` is the pristine database — never mutate it; use :meth:`fresh_db`."""

    name: str
    path: pathlib.Path
    db: dict
    policy: str
    tasks: list[dict]
    tools: ToolSet
    user_tools: ToolSet = dataclasses.field(default_factory=ToolSet)
    user_db: Optional[dict] = None
    split: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    tools_note: str = ""
    # tau2 Environment.sync_tools: fn(db, user_db) run after every tool call (telecom)
    sync: Optional[Callable[[dict, Optional[dict]], None]] = None
    _db_blob: bytes = dataclasses.field(default=b"", repr=False)

    def fresh_db(self) -> dict:
        """An independent deep copy of the initial database (fast: pickle round trip)."""
        if not self._db_blob:
            self._db_blob = pickle.dumps(self.db, protocol=pickle.HIGHEST_PROTOCOL)
        return pickle.loads(self._db_blob)

    def fresh_user_db(self) -> Optional[dict]:
        """An independent copy of the initial user-side DB (``None`` without one)."""
        return None if self.user_db is None else pickle.loads(pickle.dumps(self.user_db))

    def sync_state(self, db: dict, user_db: Optional[dict]) -> None:
        """Run the domain's env sync (no-op for domains without one)."""
        if self.sync is not None:
            self.sync(db, user_db)

    def require_tools(self) -> ToolSet:
        """The domain's tools, or a clear :class:`DomainError` when none are implemented."""
        if len(self.tools) == 0:
            raise DomainError(self.tools_note or f"domain {self.name!r} has no tools")
        return self.tools

    def task(self, task_id: str) -> dict:
        for t in self.tasks:
            if str(t.get("id")) == str(task_id):
                return t
        raise KeyError(f"task {task_id!r} not in domain {self.name!r} "
                       f"({len(self.tasks)} tasks loaded from {self.path})")

    def tasks_in_split(self, split: str) -> list[dict]:
        if split not in self.split:
            raise KeyError(f"split {split!r} not in {sorted(self.split)} for {self.name!r}")
        wanted = {str(i) for i in self.split[split]}
        return [t for t in self.tasks if str(t.get("id")) in wanted]


def default_data_roots() -> list[pathlib.Path]:
    """Directories searched for a bare domain name (see module docstring)."""
    roots = []
    env = os.environ.get("ORCHESTRA_TAU2_DATA")
    if env:
        roots.append(pathlib.Path(env).expanduser() / "domains")
    env = os.environ.get("ORCHESTRA_TOOLSCALE_DATA")
    if env:
        roots.append(pathlib.Path(env).expanduser())
    for base in (_REPO.parent / "shared" / "data", pathlib.Path.cwd().parent / "shared" / "data"):
        roots += [base / "tau2" / "domains", base / "toolscale_envs"]
    seen, out = set(), []
    for r in roots:
        key = str(r.resolve()) if r.exists() else str(r)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _resolve(path_or_name: Union[str, os.PathLike]) -> pathlib.Path:
    p = pathlib.Path(path_or_name).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise DomainError(f"{p} is a file; expected a domain directory (db.json/db.toml, policy.md)")
    name = str(path_or_name)
    name = _ALIASES.get(name, (name,))[0]
    if os.sep not in name and "/" not in name:
        roots = default_data_roots()
        for root in roots:
            if (root / name).is_dir():
                return root / name
        raise DomainError(f"domain {name!r} not found; looked in {[str(r) for r in roots]} "
                          f"(set ORCHESTRA_TAU2_DATA to the tau2 data dir, or pass a path)")
    raise DomainError(f"domain directory {p} does not exist")


def _read_db(path: pathlib.Path, stem: str, required: bool) -> Optional[dict]:
    js, tm = path / f"{stem}.json", path / f"{stem}.toml"
    try:
        if js.is_file():
            with open(js, encoding="utf-8") as f:
                return json.load(f)
        if tm.is_file():
            with open(tm, "rb") as f:
                return tomllib.load(f)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise DomainError(f"cannot parse database {js if js.is_file() else tm}: {e}") from None
    if required:
        raise DomainError(f"no {stem}.json or {stem}.toml in {path}")
    return None


def _read_json(path: pathlib.Path, default: Any) -> Any:
    if not path.is_file():
        return default
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DomainError(f"cannot parse {path}: {e}") from None


def load_domain(path_or_name: Union[str, os.PathLike], *, tools: Optional[ToolSet] = None,
                name: Optional[str] = None, policy_type: Optional[str] = None) -> Domain:
    """Load a domain by bare name (``"airline"``, ``"bank"``, …) or directory path.

    ``tools`` overrides the registered implementation; ``name`` overrides the directory name
    used to pick it. ``policy_type`` (telecom: ``"manual"`` default, or ``"workflow"``; the
    bare name ``"telecom-workflow"`` selects it too) picks the tech-support policy. Raises
    :class:`DomainError` with the path(s) involved for a missing domain, a missing
    ``db.json``/``db.toml`` or policy, or an unparsable file.
    """
    alias = _ALIASES.get(str(path_or_name))
    if alias is not None and policy_type is None:
        policy_type = alias[1]
    path = _resolve(path_or_name)
    name = name or path.name
    db = _read_db(path, "db", required=True)
    if not isinstance(db, dict):
        raise DomainError(f"database in {path} must be a JSON/TOML object, got {type(db).__name__}")
    policy_file = next((path / f for f in ("policy.md", "main_policy.md")
                        if (path / f).is_file()), None)
    if policy_file is None:
        raise DomainError(f"no policy.md (or main_policy.md) in {path}")
    policy = policy_file.read_text(encoding="utf-8")
    tasks = _read_json(path / "tasks.json", [])
    if not isinstance(tasks, list):
        raise DomainError(f"{path / 'tasks.json'} must hold a JSON list of tasks")
    split = _read_json(path / "split_tasks.json", {})
    user_db = _read_db(path, "user_db", required=False)
    note = ""
    if tools is None:
        if name in _TOOL_FACTORIES:
            tools = _TOOL_FACTORIES[name]()
        elif (path / "tools.json").is_file():  # a synthesized (ToolScale) domain's tool spec
            from orchestra_jax.envs.tau2.spec_tools import load_spec_file
            try:
                tools = load_spec_file(path / "tools.json")
            except ValueError as e:
                raise DomainError(str(e)) from None
        else:
            tools = ToolSet()
            note = (f"domain {name!r} ({path}) has no tool implementations yet (known: "
                    f"{known_tool_domains()}); ToolScale tools come from a later synthesis step — "
                    f"register them with orchestra_jax.envs.tau2.register_tools({name!r}, factory)")
    domain = Domain(name=name, path=path, db=db, policy=policy, tasks=tasks, tools=tools,
                    user_db=user_db, split=split, tools_note=note)
    if name in _DOMAIN_SETUP:
        _DOMAIN_SETUP[name](domain, policy_type or "manual")
    return domain
