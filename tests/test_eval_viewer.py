"""The trajectory viewer in real headless Chromium: the page loads without console or script
errors, every turn of a known trajectory is in the rendered DOM, the Eq. 2 breakdown is shown,
and a screenshot is taken. A deliberately broken page must be caught (the check can fail)."""
import pathlib
import re
import shutil
import subprocess

import pytest

from orchestra_jax.eval.viewer import render_html
from orchestra_jax.rollout.trajectory import Trajectory, TurnRecord

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def known_trajectories():
    out = []
    for trial, (correct, cost) in enumerate([(True, 0.004), (True, 0.010), (False, 0.002)]):
        turns = [TurnRecord(index=i, prompt_span=[0, 1], response_span=[1, 2],
                            thinking=f"thinking {trial}-{i} <b>not html</b>",
                            calls=[{"name": "search", "arguments": {"model": "search-3"}}],
                            observations=[f"observation {trial}-{i} </script><script>x()</script>"],
                            format_ok=i != 1, cost_usd=cost / 3, tool_latency_s=0.5 * i)
                 for i in range(3)]
        t = Trajectory(task_id="task-A", turns=turns, tool_names=["local_search", "gpt-5"],
                       tool_counts=[3, trial], cost_usd=cost, latency_s=1.5, outcome=float(correct),
                       correct=correct, finish_reason="done", num_turns=3, answer_valid=True)
        d = t.to_json()
        d["trial"] = trial
        d["preference"] = {"id": "p", "instruction": "cheap please", "tool_names":
                           ["local_search", "gpt-5"], "vector": [0, 0, 1, 1, 0]}
        out.append(d)
    return out


def run_chromium(page: pathlib.Path, tmp: pathlib.Path):
    if CHROMIUM is None:
        pytest.fail("chromium not installed (make system-deps installs Debian's chromium)")
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
              f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run(common + ["--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    shot = tmp / "viewer.png"
    subprocess.run(common + ["--window-size=1200,900", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, text=True, timeout=120, cwd=tmp)
    console = [l for l in dom.stderr.splitlines() if "CONSOLE" in l or "Uncaught" in l]
    return dom.stdout, console, shot


def test_viewer_in_headless_chromium(tmp_path):
    trajs = known_trajectories()
    page = tmp_path / "viewer.html"
    page.write_text(render_html(trajs, title="known run"))
    html = page.read_text()
    assert "http://" not in html and "https://" not in html and "<link" not in html
    dom, console, shot = run_chromium(page, tmp_path)
    assert console == [], console
    assert re.search(r'id="viewer-errors">\s*</div>', dom), dom[:2000]
    assert 'data-rendered-episodes="3"' in dom and 'data-rendered-turns="9"' in dom
    for trial in range(3):
        for i in range(3):
            assert f'id="turn-{trial}-{i}"' in dom
            assert f"thinking {trial}-{i} &lt;b&gt;not html&lt;/b&gt;" in dom
            assert f"observation {trial}-{i} &lt;/script&gt;" in dom
    assert 'search({"model":"search-3"})' in dom
    assert "Eq. 2 reward R = M_norm · P" in dom and "cheap please" in dom
    # group of 2 correct + 1 wrong: gpt-5 counts 0,1,2 -> normalised 0, .5, 1; cost min-max
    assert "homogeneity kept" in dom and "format ok 2/3 turns" in dom
    assert '<option value="task-A">task-A</option>' in dom
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_broken_page_is_caught(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(render_html(known_trajectories()).replace(
        "var nTurns = 0;", "var nTurns = 0; undefinedFunction();"))
    dom, console, _ = run_chromium(page, tmp_path)
    assert "undefinedFunction" in dom or console, "a script error must be detected"
