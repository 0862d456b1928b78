"""tau2-bench-format function-calling environments: domains, tools, evaluator, episode env.

``load_domain`` → :class:`Domain`; ``evaluate_actions(domain, task, actions, agent_messages)``
→ reward in [0, 1]; ``FunctionCallingEnv`` runs an episode against a user simulator.
"""

from orchestra_jax.envs.tau2.domain import (Domain, DomainError, default_data_roots,
                                            known_tool_domains, load_domain, register_tools)
from orchestra_jax.envs.tau2.evaluator import (LLMNLJudge, RewardInfo, db_hash, evaluate,
                                               evaluate_actions, evaluate_async, pass_hat_k,
                                               replay)
from orchestra_jax.envs.tau2.toolset import FunctionTool, ToolCallResult, ToolError, ToolSet

__all__ = ["Domain", "DomainError", "default_data_roots", "known_tool_domains", "load_domain",
           "register_tools", "LLMNLJudge", "RewardInfo", "db_hash", "evaluate",
           "evaluate_actions", "evaluate_async", "pass_hat_k", "replay", "FunctionTool",
           "ToolCallResult", "ToolError", "ToolSet"]
