"""tau2's generic tools shared by every domain: ``calculate`` and ``transfer_to_human_agents``."""

from __future__ import annotations

import ast
import operator
from typing import Any

from orchestra_jax.envs.tau2.toolset import ToolError

__all__ = ["calculate", "transfer_to_human_agents"]

# ---------------------------------------------------------------------------------------------
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow}
_UNOPS = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _eval_arith(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval_arith(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_eval_arith(node.left), _eval_arith(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNOPS:
        return _UNOPS[type(node.op)](_eval_arith(node.operand))
    raise ToolError("Invalid expression")


def calculate(db: Any, expression: str) -> str:
    """tau2 ``calculate``: digits, ``+-*/().`` and spaces only; result rounded to 2 decimals.

    Evaluated over floats with an AST walker (no ``eval``), so huge powers overflow with an
    error instead of hanging.
    """
    if not all(ch in "0123456789+-*/(). " for ch in expression):
        raise ToolError("Invalid characters in expression")
    if len(expression) > 1000:
        raise ToolError("Expression too long")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as e:
        raise ToolError(f"Invalid expression: {e.msg}") from None
    value = _eval_arith(tree)
    if value != value or value in (float("inf"), float("-inf")):
        raise ToolError("Result is not a finite number")
    return str(round(value, 2))


def transfer_to_human_agents(db: Any, summary: str) -> str:
    """tau2: always succeeds; ends the conversation on the agent side."""
    return "Transfer successful"
