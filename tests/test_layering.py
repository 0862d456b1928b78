"""The package's import direction (developers' guide): experiments → train/eval → rollout → envs →
tools → chat → models → sharding; `rl/` is pure math; nothing imports experiments/ or configs/.

Parses every module's imports (static AST, so lazy imports inside functions count too).
"""
import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "orchestra_jax"

# Layer rank: a module may import only from layers with a rank <= its own (same layer allowed).
RANK = {"sharding": 0, "models": 1, "chat": 2, "tools": 3, "envs": 4, "rollout": 5,
        "data": 6, "train": 7, "eval": 7}


def _layer(path: pathlib.Path) -> str:
    rel = path.relative_to(PKG).parts
    return rel[0].removesuffix(".py") if len(rel) > 1 or rel[0] != "__init__.py" else "root"


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the package path
                base = path.relative_to(PKG.parent).with_suffix("").parts[:-node.level]
                yield ".".join(base + ((node.module,) if node.module else ()))
            elif node.module:
                yield node.module


MODULES = sorted(PKG.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_import_direction(path):
    me = _layer(path)
    for name in _imports(path):
        top = name.split(".")[0]
        assert top not in ("experiments", "configs", "tests"), f"{path} imports {name}"
        if top != "orchestra_jax" or name == "orchestra_jax":
            continue
        target = name.split(".")[1]
        if me in ("root",) or target == me:
            continue
        if me == "rl":
            pytest.fail(f"rl/ must be pure math, but {path.name} imports {name}")
        if target == "rl":   # pure math, usable by train/eval only (checked before RANK)
            assert me in ("train", "eval"), f"{path}: only train/eval use rl ({name})"
            continue
        assert target in RANK, f"{path} imports unknown layer {name}"
        assert RANK[target] <= RANK[me], (
            f"{path.relative_to(PKG)} ({me}) imports {name} ({target}): wrong direction")


def test_modules_found():
    assert len(MODULES) > 30
