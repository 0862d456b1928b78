"""Trajectory viewer: one self-contained HTML page per run (inline JS/CSS, no server, no network).

For every episode: task id / trial, outcome, cost (US cents), latency (s), finish reason, the
preference (instruction + P), the reward and its Eq. 2 breakdown (the group's min-max normalised
features ``rl.rewards.normalised_features`` · P, the group being the run's trials of the same
task), the §4.3 filter verdicts (homogeneity of the group's rewards, per-turn format, valid
output) and every turn: the policy's thinking, each tool call with its arguments, the
observations, the turn's cost and latency. Filters: task, outcome, tool used.

Input: compact trajectories (``trajectories.jsonl`` of an evaluation run, or any list of
``Trajectory.to_json()`` dicts, e.g. from training). A page-level error collector writes any
script error into ``#viewer-errors`` so a headless ``--dump-dom`` shows it.
"""

from __future__ import annotations

import html
import json
import os
import pathlib
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from orchestra_jax.eval.records import TRAJECTORIES_FILE, load_trajectories
from orchestra_jax.rl.filters import homogeneity_filter
from orchestra_jax.rl.rewards import normalised_features

VIEWER_FILE = "viewer.html"
HOMOGENEITY_THRESHOLD = 0.1   # [P] §4.3


def _default_preference(tool_names: Sequence[str]) -> list[float]:
    """[ours] without a preference: outcome only (P = [0..0, 1, 0, 0])."""
    return [0.0] * len(tool_names) + [1.0, 0.0, 0.0]


def _group_breakdowns(trajs: Sequence[dict]) -> None:
    """Adds ``eq2`` (features, normalised features, P, reward) and ``filters`` to each dict."""
    groups: dict[str, list[dict]] = {}
    for t in trajs:
        groups.setdefault(str(t.get("task_id")), []).append(t)
    for items in groups.values():
        names = list(items[0].get("tool_names") or [])
        same = all(list(t.get("tool_names") or []) == names for t in items)
        members = items if same else []
        if members:
            counts = np.array([t.get("tool_counts") or [0] * len(names) for t in members],
                              np.float64).reshape(len(members), len(names))
            correct = np.array([bool(t.get("correct")) for t in members])
            cost = np.array([float(t.get("cost_usd") or 0.0) for t in members])
            lat = np.array([float(t.get("latency_s") or 0.0) for t in members])
            mn = np.asarray(normalised_features(counts, correct, cost, lat))
        for i, t in enumerate(items):
            pref = (t.get("preference") or {}).get("vector") if t.get("preference") else None
            tn = list(t.get("tool_names") or [])
            if pref is None or len(pref) != len(tn) + 3:
                pref = _default_preference(tn)
            if members:
                row = mn[i]
                reward = float(row @ np.asarray(pref)) if t.get("correct") else 0.0
                feats = [int(c) for c in (t.get("tool_counts") or [])] + [
                    int(bool(t.get("correct"))), -float(t.get("cost_usd") or 0.0),
                    -float(t.get("latency_s") or 0.0)]
                t["eq2"] = {"names": tn + ["outcome", "-cost_usd", "-latency_s"],
                            "features": feats, "normalised": [float(x) for x in row],
                            "preference": [float(p) for p in pref], "reward": reward,
                            "group_size": len(members)}
            else:
                t["eq2"] = None
        rewards = np.array([[(x.get("eq2") or {}).get("reward", 0.0) for x in items]])
        homog = bool(np.asarray(homogeneity_filter(rewards, threshold=HOMOGENEITY_THRESHOLD,
                                                   std="population"))[0]) if len(items) > 1 \
            else False
        for t in items:
            turns = t.get("turns") or []
            t["filters"] = {
                "group_kept_by_homogeneity": homog,
                "format_ok_turns": sum(bool(u.get("format_ok")) for u in turns),
                "turns": len(turns),
                "valid_output": bool(t.get("answer_valid")) and t.get("finish_reason") != "error",
            }


_CSS = """
body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{position:sticky;top:0;background:#233;color:#fff;padding:8px 14px;z-index:2}
header input,header select{margin-right:8px}
#viewer-errors{color:#b00020;font-weight:bold;white-space:pre-wrap}
.ep{background:#fff;margin:10px 14px;border:1px solid #ccd;border-radius:6px;padding:8px 12px}
.ep.correct{border-left:6px solid #2a8a3a}.ep.wrong{border-left:6px solid #b33}
.meta span{margin-right:14px}.turn{border-top:1px dashed #bbc;padding:6px 0}
.think{color:#556;font-style:italic;white-space:pre-wrap}
pre{background:#f0f2f5;padding:6px;white-space:pre-wrap;word-break:break-word;margin:4px 0}
.call{color:#0b4f8a}.obs{border-left:3px solid #99a;padding-left:6px}
table.eq2{border-collapse:collapse;font-size:12px}table.eq2 td,table.eq2 th{border:1px solid #ccd;
padding:2px 6px}.bad{color:#b33}.ok{color:#2a8a3a}
"""

_JS = r"""
(function(){
  var errBox = document.getElementById('viewer-errors');
  function report(msg){ errBox.textContent += msg + "\n"; document.body.setAttribute('data-errors','1'); }
  window.addEventListener('error', function(e){ report('error: ' + e.message); });
  var origError = console.error;
  console.error = function(){ report('console.error: ' + Array.prototype.join.call(arguments,' ')); origError.apply(console, arguments); };
  var data = JSON.parse(document.getElementById('viewer-data').textContent);
  function el(tag, cls, text){ var e=document.createElement(tag); if(cls) e.className=cls; if(text!==undefined&&text!==null) e.textContent=String(text); return e; }
  function fmt(x, d){ return (x===null||x===undefined) ? '—' : Number(x).toFixed(d); }
  var list = document.getElementById('episodes');
  var toolSel = document.getElementById('f-tool'), taskSel = document.getElementById('f-task');
  var tools = {}, tasks = {};
  data.trajectories.forEach(function(t){
    tasks[t.task_id]=1;
    (t.tool_names||[]).forEach(function(n,i){ if((t.tool_counts||[])[i]>0) tools[n]=1; });
  });
  Object.keys(tasks).sort().forEach(function(k){ var o=el('option',null,k); o.value=k; taskSel.appendChild(o); });
  Object.keys(tools).sort().forEach(function(k){ var o=el('option',null,k); o.value=k; toolSel.appendChild(o); });
  var nTurns = 0;
  data.trajectories.forEach(function(t, ti){
    var ep = el('details', 'ep ' + (t.correct ? 'correct' : 'wrong'));
    ep.id = 'ep-' + ti;
    ep.dataset.task = t.task_id; ep.dataset.outcome = t.correct ? 'correct' : 'wrong';
    var used = []; (t.tool_names||[]).forEach(function(n,i){ if((t.tool_counts||[])[i]>0) used.push(n); });
    ep.dataset.tools = '|' + used.join('|') + '|';
    var sum = el('summary');
    sum.appendChild(el('b', null, t.task_id + ' #' + t.trial));
    var meta = el('span','meta');
    [['outcome', t.outcome], ['correct', t.correct], ['cost ¢', fmt(100*(t.cost_usd||0),4)],
     ['latency s', fmt(t.latency_s,2)], ['turns', (t.turns||[]).length], ['finish', t.finish_reason]]
      .forEach(function(p){ meta.appendChild(el('span', null, ' ' + p[0] + ': ' + p[1])); });
    sum.appendChild(meta); ep.appendChild(sum);
    if (t.error) ep.appendChild(el('div','bad','error: ' + t.error));
    if (t.preference) {
      ep.appendChild(el('div', null, 'preference ' + t.preference.id + ': ' + t.preference.instruction));
    }
    if (t.eq2) {
      var tb = el('table','eq2'); var h = el('tr'); h.appendChild(el('th',null,''));
      t.eq2.names.forEach(function(n){ h.appendChild(el('th',null,n)); }); tb.appendChild(h);
      [['M', t.eq2.features, 4], ['M_norm', t.eq2.normalised, 3], ['P', t.eq2.preference, 2]].forEach(function(r){
        var tr = el('tr'); tr.appendChild(el('th',null,r[0]));
        r[1].forEach(function(v){ tr.appendChild(el('td',null,fmt(v,r[2]))); }); tb.appendChild(tr); });
      var cap = el('div', null, 'Eq. 2 reward R = M_norm · P' + (t.correct ? '' : ' (0: not correct)') + ' = ' + fmt(t.eq2.reward,4) + '  (group of ' + t.eq2.group_size + ')');
      cap.className = 'reward'; ep.appendChild(cap); ep.appendChild(tb);
    }
    if (t.filters) {
      var f = t.filters;
      ep.appendChild(el('div', null, 'filters: homogeneity ' + (f.group_kept_by_homogeneity ? 'kept' : 'dropped (std < 0.1)') +
        ' · format ok ' + f.format_ok_turns + '/' + f.turns + ' turns · output ' + (f.valid_output ? 'valid' : 'invalid')));
    }
    ((t.info||{}).opening_messages||[]).forEach(function(m){
      var d = el('details'); d.appendChild(el('summary', null, 'opening ' + m.role + ' message'));
      d.appendChild(el('pre', null, m.content)); ep.appendChild(d); });
    (t.turns||[]).forEach(function(u, ui){
      var tu = el('div','turn'); tu.id = 'turn-' + ti + '-' + ui; nTurns++;
      tu.appendChild(el('b', null, 'turn ' + u.index + ' — cost ¢' + fmt(100*(u.cost_usd||0),5) +
        ', tool latency ' + fmt(u.tool_latency_s,3) + ' s, generation ' + fmt(u.gen_latency_s,3) + ' s, format ' + (u.format_ok ? 'ok' : 'bad')));
      if (u.thinking) tu.appendChild(el('div','think', u.thinking));
      if (u.message) tu.appendChild(el('pre', null, 'message: ' + u.message));
      (u.calls||[]).forEach(function(c){ tu.appendChild(el('pre','call', c.name + '(' + JSON.stringify(c.arguments) + ')')); });
      if (!(u.calls||[]).length && !u.message) tu.appendChild(el('pre', null, u.text));
      (u.errors||[]).forEach(function(e){ tu.appendChild(el('div','bad', e)); });
      (u.observations||[]).forEach(function(o){ tu.appendChild(el('pre','obs', o)); });
      ep.appendChild(tu);
    });
    list.appendChild(ep);
  });
  function apply(){
    var task = taskSel.value, out = document.getElementById('f-outcome').value, tool = toolSel.value, shown = 0;
    Array.prototype.forEach.call(list.children, function(ep){
      var ok = (!task || ep.dataset.task === task) && (!out || ep.dataset.outcome === out) &&
               (!tool || ep.dataset.tools.indexOf('|' + tool + '|') >= 0);
      ep.style.display = ok ? '' : 'none'; if (ok) shown++; });
    document.getElementById('count').textContent = shown + ' / ' + list.children.length + ' episodes';
  }
  [taskSel, toolSel, document.getElementById('f-outcome')].forEach(function(s){ s.addEventListener('change', apply); });
  apply();
  document.body.setAttribute('data-rendered-episodes', String(list.children.length));
  document.body.setAttribute('data-rendered-turns', String(nTurns));
})();
"""


def _viewer_preference(t: dict) -> None:
    """Training records (``Trajectory.to_json``) carry P as a list next to
    ``preference_instruction`` / ``preference_kind``; the page reads evaluation records'
    ``{"id", "instruction", "vector"}`` form."""
    p = t.get("preference")
    if isinstance(p, (list, tuple)):
        t["preference"] = {"id": t.get("preference_kind") or "P",
                           "instruction": t.get("preference_instruction") or "",
                           "vector": [float(x) for x in p]}


def render_html(trajectories: Sequence[Mapping[str, Any]], *, title: str = "trajectories",
                run_info: Optional[Mapping[str, Any]] = None) -> str:
    """The page for these trajectories (dicts as written by ``compact_trajectory`` /
    ``Trajectory.to_json``)."""
    trajs = [dict(t) for t in trajectories]
    for t in trajs:
        t.setdefault("trial", 0)
        _viewer_preference(t)
        for k in ("tokens", "loss_mask", "rollout_logprobs"):
            t.pop(k, None)
    _group_breakdowns(trajs)
    payload = json.dumps({"trajectories": trajs, "run": run_info or {}}, ensure_ascii=True,
                         default=str).replace("</", "<\\/")
    info = html.escape(json.dumps(run_info or {}, default=str)[:400])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head>
<body>
<header><b>{html.escape(title)}</b> <span id="count"></span><br>
task <select id="f-task"><option value="">all</option></select>
outcome <select id="f-outcome"><option value="">all</option><option value="correct">correct</option>
<option value="wrong">not correct</option></select>
tool <select id="f-tool"><option value="">any</option></select>
<small>{info}</small></header>
<div id="viewer-errors"></div>
<div id="episodes"></div>
<script type="application/json" id="viewer-data">{payload}</script>
<script>{_JS}</script>
</body></html>
"""


def write_viewer(run_dir: Union[str, os.PathLike],
                 out: Optional[Union[str, os.PathLike]] = None) -> pathlib.Path:
    """Writes ``run_dir/viewer.html`` (or ``out``) from ``run_dir/trajectories.jsonl``."""
    run_dir = pathlib.Path(run_dir)
    trajs = load_trajectories(run_dir) if (run_dir / TRAJECTORIES_FILE).is_file() else []
    info = None
    if (run_dir / "run.json").is_file():
        info = {k: v for k, v in json.loads((run_dir / "run.json").read_text()).items()
                if k != "spec"}
    page = pathlib.Path(out) if out else run_dir / VIEWER_FILE
    page.write_text(render_html(trajs, title=f"orchestra_jax run {run_dir.name}", run_info=info),
                    encoding="utf-8")
    return page
