"""tau2-bench's ``mock`` domain (a tiny task tracker) — tools and env assertions.

Small enough to exercise every evaluator path (initial_state ``initialization_data`` /
``initialization_actions`` / ``message_history``, ``ENV_ASSERTION``, ``ACTION`` reward basis)
without the big airline/retail databases. Schemas are written here after tau2's signatures.
"""

from __future__ import annotations

from typing import Optional

from orchestra_jax.envs.tau2.generic import transfer_to_human_agents
from orchestra_jax.envs.tau2.toolset import GENERIC, READ, WRITE, FunctionTool, ToolError, ToolSet

__all__ = ["mock_toolset"]

TASK_STATUSES = ("pending", "completed")


def create_task(db: dict, user_id: str, title: str, description: Optional[str] = None) -> dict:
    if user_id not in db["users"]:
        raise ToolError(f"User {user_id} not found")
    task_id = f"task_{len(db['tasks']) + 1}"
    task = {"task_id": task_id, "title": title, "description": description, "status": "pending"}
    db["tasks"][task_id] = task
    db["users"][user_id]["tasks"].append(task_id)
    return task


def get_users(db: dict) -> list[dict]:
    return list(db["users"].values())


def update_task_status(db: dict, task_id: str, status: str) -> dict:
    if task_id not in db["tasks"]:
        raise ToolError(f"Task {task_id} not found")
    if status not in TASK_STATUSES:
        raise ToolError(f"Invalid status {status}; must be one of {list(TASK_STATUSES)}")
    db["tasks"][task_id]["status"] = status
    return db["tasks"][task_id]


def assert_number_of_tasks(db: dict, user_id: str, expected_number: int) -> bool:
    if user_id not in db["users"]:
        raise ToolError(f"User {user_id} not found")
    return len(db["users"][user_id]["tasks"]) == expected_number


def assert_task_status(db: dict, task_id: str, expected_status: str) -> bool:
    if task_id not in db["tasks"]:
        raise ToolError(f"Task {task_id} not found")
    return db["tasks"][task_id]["status"] == expected_status


def _obj(props: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": props, "required": required}


def mock_toolset() -> ToolSet:
    s = {"type": "string"}
    tools = [
        FunctionTool("create_task", "Create a new task for a user.",
                     _obj({"user_id": {**s, "description": "The ID of the user."},
                           "title": {**s, "description": "The title of the task."},
                           "description": {"type": ["string", "null"],
                                           "description": "Optional task description."}},
                          ["user_id", "title"]), create_task, WRITE),
        FunctionTool("get_users", "Get all users in the database.", _obj({}, []), get_users, READ),
        FunctionTool("update_task_status", "Update the status of a task.",
                     _obj({"task_id": {**s, "description": "The ID of the task."},
                           "status": {**s, "enum": list(TASK_STATUSES),
                                      "description": "The new status."}},
                          ["task_id", "status"]), update_task_status, WRITE),
        FunctionTool("transfer_to_human_agents",
                     "Transfer the user to a human agent, with a summary of the user's issue.",
                     _obj({"summary": {**s, "description": "A summary of the user's issue."}},
                          ["summary"]), transfer_to_human_agents, GENERIC),
    ]
    return ToolSet(tools, assertions={"assert_number_of_tasks": assert_number_of_tasks,
                                      "assert_task_status": assert_task_status})
