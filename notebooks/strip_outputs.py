"""Strips outputs and execution counts from notebooks before they are committed.

    .venv/bin/python notebooks/strip_outputs.py            # every notebooks/*.ipynb
    .venv/bin/python notebooks/strip_outputs.py FILE ...   # just these

Uses nbformat only (no jupyter/nbconvert needed); cell ids and metadata other than
per-cell execution timing are kept. ``tests/test_notebooks.py`` fails on committed outputs.
"""
import pathlib
import sys

import nbformat


def strip(path: pathlib.Path) -> bool:
    """Clears ``path`` in place; returns True when it changed."""
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if cell.get("outputs") or cell.get("execution_count") is not None:
            cell.outputs, cell.execution_count = [], None
            changed = True
        if "execution" in cell.metadata:
            del cell.metadata["execution"]
            changed = True
    if changed:
        nbformat.write(nb, path)
    return changed


def main(argv: list[str]) -> int:
    here = pathlib.Path(__file__).resolve().parent
    paths = [pathlib.Path(a) for a in argv] or sorted(here.glob("*.ipynb"))
    for p in paths:
        if not p.is_file():
            print(f"error: {p} is not a file", file=sys.stderr)
            return 2
        print(f"{p}: {'stripped' if strip(p) else 'clean'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
