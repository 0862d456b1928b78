"""The paper's reported numbers (arXiv 2511.21689v1), transcribed from
``shared/reference/paper_spec.md`` §6 exactly as printed (markers ‡ and * kept; "–" = not
reported by the paper). Units: accuracy in %, cost in US cents, latency in minutes (Table 1
caption; Tables 2, 4 and 16 are presumed the same units, paper_spec §6.4/§6.8); Table 3 is the
App. L preference score; Table 15 is calls per tool per instance, averaged over HLE, FRAMES and
τ²-Bench. Each table: ``{"columns": [...], "rows": [[label cells..., value cells...]]}``.
"""

from __future__ import annotations

TABLE1 = {
    "label_columns": 2,
    "columns": ['Tools', 'Model(s)', 'HLE (↑)', 'FRAMES (↑)', 'τ²-Bench (↑)', 'Cost (↓)', 'Latency (↓)'],
    "rows": [
        ['Existing reported SOTA', 'GPT-5', '35.2', '–', '84.2‡', '–', '–'],
        ['Existing reported SOTA', 'o3', '24.3', '–', '68.4', '–', '–'],
        ['Existing reported SOTA', 'GPT-4o', '5.3', '–', '43.8', '–', '–'],
        ['No tool', 'Qwen3-8B', '3.2', '24.2', '–*', '0.2', '0.6'],
        ['No tool', 'Llama-Nemotron-49B', '3.6', '25.6', '–*', '0.4', '1.1'],
        ['No tool', 'Llama-3.3-70B', '3.8', '32.4', '–*', '0.5', '1.4'],
        ['No tool', 'Qwen3-235B-A22B', '5.2', '34.3', '–*', '2.6', '3.3'],
        ['No tool', 'Claude Opus 4.1', '11.7', '58.2', '–*', '27.4', '8.2'],
        ['No tool', 'GPT-5', '23.4', '66.3', '–*', '6.2', '4.1'],
        ['Basic tools', 'Qwen3-8B', '4.7', '26.5', '40.7', '1.3', '2.2'],
        ['Basic tools', 'Llama-Nemotron-49B', '6.8', '28.2', '23.2', '2.5', '3.5'],
        ['Basic tools', 'Llama-3.3-70B', '4.6', '42.3', '17.6', '2.8', '4.3'],
        ['Basic tools', 'Qwen3-235B-A22B', '14.0', '39.5', '52.9', '12.3', '10.2'],
        ['Basic tools', 'Claude Opus 4.1', '19.8', '63.5', '46.0', '76.2', '32.5'],
        ['Basic tools', 'GPT-5', '35.1', '74.0', '77.7', '30.2', '19.8'],
        ['Basic tools, Specialized LLMs, Generalist LLMs', 'Qwen3-8B', '30.6', '68.9', '72.3', '27.6', '18.3'],
        ['Basic tools, Specialized LLMs, Generalist LLMs', 'Llama-Nemotron-49B', '25.8', '57.9', '66.7', '25.6', '17.1'],
        ['Basic tools, Specialized LLMs, Generalist LLMs', 'Llama-3.3-70B', '19.7', '52.4', '55.8', '19.7', '13.4'],
        ['Basic tools, Specialized LLMs, Generalist LLMs', 'Qwen3-235B-A22B', '32.8', '74.2', '75.6', '29.7', '21.2'],
        ['Basic tools, Specialized LLMs, Generalist LLMs', 'Claude Opus 4.1', '34.6', '72.8', '76.8', '52.5', '25.6'],
        ['Basic tools, Specialized LLMs, Generalist LLMs', 'GPT-5', '21.2', '57.5', '62.3', '17.8', '13.6'],
        ['Basic tools, Specialized LLMs, Generalist LLMs', 'Orchestrator-8B', '37.1', '76.3', '80.2', '9.2', '8.2'],
    ],
}

TABLE2 = {
    "label_columns": 1,
    "columns": ['Model(s)', 'HLE (↑)', 'Frames (↑)', 'τ²-Bench (↑)', 'Cost (↓)', 'Latency (↓)'],
    "rows": [
        ['Qwen3-8B', '12.6', '34.9', '38.3', '37.9', '10.6'],
        ['Llama-Nemotron-49B', '13.9', '32.7', '22.9', '53.6', '8.3'],
        ['Llama-3.3-70B', '13.2', '49.3', '12.8', '63.3', '10.1'],
        ['Qwen3-235B-A22B', '14.7', '63.5', '38.7', '87.2', '13.8'],
        ['Claude Opus 4.1', '17.8', '53.6', '43.4', '102.4', '19.5'],
        ['GPT-5', '16.4', '54.8', '44.8', '81.3', '14.6'],
        ['Orchestrator-8B', '22.0', '73.8', '48.8', '34.8', '8.2'],
    ],
}

TABLE3 = {
    "label_columns": 1,
    "columns": ['Model(s)', 'HLE', 'Frames', 'τ²-Bench'],
    "rows": [
        ['Qwen3-8B', '25.3', '43.2', '55.7'],
        ['Llama-Nemotron-49B', '27.6', '50.1', '56.9'],
        ['Llama-3.3-70B', '22.3', '44.5', '55.4'],
        ['Qwen3-235B-A22B', '37.9', '54.5', '68.2'],
        ['Claude Opus 4.1', '40.2', '63.4', '73.5'],
        ['GPT-5', '34.6', '62.3', '70.3'],
        ['Orchestrator-8B', '46.7', '68.4', '79.5'],
    ],
}

TABLE4 = {
    "label_columns": 1,
    "columns": ['', 'HLE (↑)', 'Frames (↑)', 'τ²-Bench (↑)', 'Cost (↓)', 'Latency (↓)'],
    "rows": [
        ['Qwen3-8B', '29.7', '68.2', '71.9', '27.4', '17.9'],
        ['Nemotron-49B', '25.6', '57.8', '66.3', '24.3', '17.2'],
        ['Llama-3.3-70B', '19.6', '52.2', '55.4', '17.9', '12.0'],
        ['Qwen3-235B-A22B', '32.4', '74.1', '75.3', '27.9', '20.8'],
        ['Claude Opus 4.1', '34.5', '72.3', '76.4', '52.3', '25.1'],
        ['GPT-5', '20.8', '57.3', '61.9', '17.5', '13.2'],
        ['Orchestrator-8B', '36.9', '76.6', '80.4', '7.5', '7.8'],
    ],
}

TABLE15 = {
    "label_columns": 1,
    "columns": ['Model', 'GPT-5', 'GPT-5-mini', 'Qwen-32B', 'Coder-32B', 'Math-72B', 'Math-7B', 'Llama-70B', 'Local search', 'Web search', 'Code interpreter'],
    "rows": [
        ['Qwen3-8B', '6.0', '0.5', '1.4', '0.5', '0.0', '0.0', '0.0', '0.8', '1.2', '1.6'],
        ['Nemontron-49B', '5.1', '1.6', '0.5', '0.8', '0.1', '0.1', '0.3', '0.7', '0.9', '1.4'],
        ['Llama-3.3-70B', '1.8', '0.0', '0.1', '0.0', '1.4', '0.3', '4.8', '0.6', '1.4', '1.3'],
        ['Qwen3-235B-A22B', '6.2', '0.3', '0.6', '1.2', '0.6', '0.1', '1.1', '1.4', '1.0', '2.2'],
        ['Claude Opus 4.1', '6.2', '0.2', '0.3', '0.3', '0.1', '0.0', '0.1', '1.0', '1.3', '1.4'],
        ['GPT-5', '2.7', '5.6', '0.0', '0.2', '0.0', '0.0', '0.0', '0.5', '0.7', '1.0'],
        ['Orchestrator-8B', '1.6', '1.7', '1.3', '0.2', '0.0', '0.1', '0.0', '1.8', '0.7', '0.8'],
    ],
}

TABLE16 = {
    "label_columns": 2,
    "columns": ['Tools', 'Model(s)', 'τ²-Bench (↑)', 'Cost (↓)', 'Latency (↓)'],
    "rows": [
        ['Basic tools', 'Qwen3-8B', '40.7', '1.6', '2.3'],
        ['Basic tools', 'Llama-Nemotron-49B', '23.2', '2.7', '3.6'],
        ['Basic tools', 'Llama-3.3-70B', '17.6', '3.1', '4.5'],
        ['Basic tools', 'Qwen3-235B-A22B', '52.9', '12.6', '10.6'],
        ['Basic tools', 'Claude Opus 4.1', '46.0', '81.2', '32.8'],
        ['Basic tools', 'GPT-5', '77.7', '31.3', '20.2'],
        ['Basic tools, Specialized LLMs, Generalist LLMs', 'Qwen3-8B', '72.3', '27.9', '18.4'],
        ['Basic tools, Specialized LLMs, Generalist LLMs', 'Llama-Nemotron-49B', '66.7', '25.8', '17.5'],
        ['Basic tools, Specialized LLMs, Generalist LLMs', 'Llama-3.3-70B', '55.8', '20.1', '14.2'],
        ['Basic tools, Specialized LLMs, Generalist LLMs', 'Qwen3-235B-A22B', '75.6', '30.0', '22.6'],
        ['Basic tools, Specialized LLMs, Generalist LLMs', 'Claude Opus 4.1', '76.8', '52.8', '24.1'],
        ['Basic tools, Specialized LLMs, Generalist LLMs', 'GPT-5', '62.3', '18.2', '14.5'],
        ['Basic tools, Specialized LLMs, Generalist LLMs', 'Orchestrator-8B', '80.2', '10.3', '8.6'],
    ],
}

# Fig. 6 style points (paper_spec §6.10): read approximately off the plot (±1 point, ±$0.02);
# (cost in US dollars, HLE accuracy %) at 10 / 20 / 50 / 100 turns.
FIGURE6_POINTS = {
    "Orchestrator-8B": [(0.03, 27), (0.08, 32), (0.18, 36), (0.40, 39.3)],
    "GPT-5": [(0.16, 27.5), (0.24, 30.3), (0.45, 35.1), (0.60, 36)],
    "Claude Opus 4.1": [(0.30, 15), (0.40, 17.6), (0.60, 19), (0.83, 19.9)],
    "Qwen3-235B-A22B": [(0.03, 7.9), (0.10, 11.2), (0.17, 12.9), (0.40, 14)],
}
FIGURE6_TURNS = (10, 20, 50, 100)

TABLES = {"1": TABLE1, "2": TABLE2, "3": TABLE3, "4": TABLE4, "15": TABLE15, "16": TABLE16}


def value(cell: str):
    """A reference cell as a float (markers stripped), or None for "–" (not reported)."""
    c = cell.rstrip("‡*").strip()
    return None if c in ("", "–", "-") else float(c)
