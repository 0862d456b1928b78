"""The notebooks in notebooks/ run clean, top to bottom, in a fresh kernel of this venv.

Each notebook is executed with nbclient (kernel ``python3`` = ipykernel inside the venv; its
``python`` argv is resolved to this interpreter, checked below) with a per-cell timeout; any cell
error fails the test with the cell's source and traceback. Committed notebooks must carry no
outputs or execution counts (strip them with ``.venv/bin/python notebooks/strip_outputs.py``).
The notebooks' own asserts are the checks (HF parity, sharding placement, attention impls agree,
log-probs re-scored, reward orderings, the signs of the GRPO update, table cells by hand).
"""
import os
import pathlib
import sys
import time

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[notebooks]'")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[notebooks]'")

from tests.conftest import REPO  # noqa: E402

NB_DIR = REPO / "notebooks"
NOTEBOOKS = ["01_model.ipynb", "02_rollout.ipynb", "03_reward_shaping.ipynb",
             "04_grpo_step.ipynb", "05_eval_tables.ipynb"]
KERNEL = "python3"
CELL_TIMEOUT_S = 300      # one cell; the whole notebook is bounded by the pytest timeout


def _read(name: str):
    path = NB_DIR / name
    if not path.is_file():
        pytest.fail(f"notebook {path} is missing")
    return nbformat.read(path, as_version=4)


def _client(nb, cwd: pathlib.Path):
    env_note = {"metadata": {"path": str(cwd)}}
    return nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S,
                                   allow_errors=False, resources=env_note,
                                   startup_timeout=120)


def test_notebook_set_is_complete():
    assert sorted(p.name for p in NB_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_no_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"{name}: code cells {dirty} carry outputs; strip them with "
                       f"`.venv/bin/python notebooks/strip_outputs.py notebooks/{name}`")
    assert nb.metadata.get("kernelspec", {}).get("name") == KERNEL
    assert any(c.cell_type == "markdown" for c in nb.cells)


def test_kernel_is_this_venv(tmp_path):
    """The ``python3`` kernel nbclient starts runs this very interpreter (the venv's)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import sys, orchestra_jax; print(sys.prefix); print(orchestra_jax.__file__)")])
    _client(nb, tmp_path).execute()
    out = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    prefix, pkg = out.split()
    assert os.path.abspath(prefix) == os.path.abspath(sys.prefix)   # the venv, not its base python
    assert pathlib.Path(pkg).resolve().is_relative_to(REPO)


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_clean(name):
    nb = _read(name)
    t0 = time.perf_counter()
    try:
        _client(nb, NB_DIR).execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{name}: a cell raised\n{e}")
    except nbclient.exceptions.DeadKernelError as e:
        pytest.fail(f"{name}: the kernel died: {e}")
    dt = time.perf_counter() - t0
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    ran = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in ran), f"{name}: not every code cell ran"
    print(f"{name}: {dt:.1f} s")
