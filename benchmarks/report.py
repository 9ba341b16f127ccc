"""Plots and a markdown table from the benchmark JSON files (numbers exactly as stored there).

Reads ``benchmarks/results/quality.json`` and ``speed.json`` (``--quick``: the ``-quick`` files) and writes under
``benchmarks/results/``: ``quality_<task>.png`` (metric vs compression, one line per method), ``needle_heatmap.png``
(length x depth, ours in tag mode and at 50x), ``speed_throughput.png`` and ``speed_memory.png`` (against context
length, log x), and ``RESULTS.md``.

Usage::

    .venv/bin/python -m benchmarks.report [--quick]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR

TASK_TITLES = {
    "hotpotqa": "HotpotQA held-out: supporting facts kept",
    "needle": "Needle in a haystack (essays): needle kept",
    "multikey": "Multi-key needles (~8K tokens): value kept",
    "variable_tracking": "Variable tracking (~8K tokens): whole chain kept",
    "squad": "SQuAD v2 long context (~8K tokens): answer kept",
}
HEADLINE = "ours-sentence"
MARKERS = "osD^vP*Xhp<>"


def _style(index: int, name: str, headline: str) -> dict[str, Any]:
    """A colour and marker per line (distinct even where lines coincide); the headline drawn thicker."""
    import matplotlib

    colours = matplotlib.colormaps["tab20"].colors
    return {
        "color": colours[(2 * index) % 20 if index < 10 else (2 * index + 1) % 20],
        "marker": MARKERS[index % len(MARKERS)],
        "linewidth": 2.8 if name == headline else 1.3,
        "markersize": 7 if name == headline else 5,
        "zorder": 4 if name == headline else 2,
    }


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _ratio(label: str) -> float:
    return float(label.rstrip("x"))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------------------------------- plots


def plot_quality(task: str, data: dict[str, Any], path: Path) -> Path:
    """Primary metric vs nominal compression (log x), one line per method; tag mode at its achieved ratio."""
    plt = _pyplot()
    metric = data["primary_metric"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for index, (name, entry) in enumerate(data["methods"].items()):
        results = entry.get("results", {})
        if "error" in entry or not results:
            continue
        suffix = f" (first {entry['n_examples']})" if entry["n_examples"] < data["n_examples"] else ""
        style = _style(index, name, HEADLINE)
        if "tags" in results:
            point = results["tags"]
            if point.get("achieved_ratio"):
                ax.scatter(
                    [point["achieved_ratio"]],
                    [point["metrics"][metric]],
                    marker="*",
                    s=180,
                    color=style["color"],
                    zorder=5,
                    label=f"{entry['label']} @ {point['achieved_ratio']}x{suffix}",
                )
            continue
        labels = [b for b in data["budgets"] if b in results]
        ax.plot(
            [_ratio(b) for b in labels],
            [results[b]["metrics"][metric] for b in labels],
            linestyle="--" if entry.get("text_only") else "-",
            label=entry["label"] + suffix,
            **style,
        )
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks([_ratio(b) for b in data["budgets"]], data["budgets"])
    ax.set_xlabel("compression (o200k tokens, budget)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{TASK_TITLES.get(task, task)} (n={data['n_examples']})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_needle_heatmaps(heatmaps: dict[str, Any], path: Path) -> Path | None:
    """Needle kept per (length, depth): ours in tag mode and at 50x."""
    panels = [
        (name, label)
        for name, label in ((HEADLINE, "50x"), ("ours-tags", "tags"))
        if label in heatmaps["methods"].get(name, {})
    ]
    if not panels:
        return None
    plt = _pyplot()
    lengths, depths = heatmaps["lengths"], heatmaps["depths"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (name, label) in zip(axes[0], panels):
        grid = [[float("nan") if v is None else v for v in row] for row in heatmaps["methods"][name][label]]
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                ax.text(j, i, "-" if value != value else f"{value:g}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(depths)), [f"{d:.0%}" for d in depths])
        ax.set_yticks(range(len(lengths)), [_tokens(n) for n in lengths])
        ax.set_xlabel("needle depth")
        ax.set_ylabel("haystack (o200k tokens)")
        ax.set_title(f"{name} @ {label}", fontsize=10)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="needle kept")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_speed(speed: dict[str, Any], key: str, ylabel: str, path: Path) -> Path:
    """One line per method of ``key`` against context length (log x; log y, symlog for memory that can be 0)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    by_method: dict[str, list[tuple[int, float]]] = {}
    for point in speed["points"]:
        if point.get(key) is not None:
            by_method.setdefault(point["method"], []).append((point["tokens"], point[key]))
    for index, (name, values) in enumerate(by_method.items()):
        values.sort()
        ax.plot(
            [v[0] for v in values],
            [v[1] for v in values],
            linestyle="--" if "raw-forward" in name else "-",
            label=name,
            **_style(index, name, "ours"),
        )
    ax.set_xscale("log")
    if key == "memory_mb":
        ax.set_yscale("symlog", linthresh=10)
    else:
        ax.set_yscale("log")
    ax.minorticks_off()
    ax.set_xticks(speed["lengths"], [_tokens(n) for n in speed["lengths"]])
    ax.set_xlabel("context length (o200k tokens)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} on {speed['machine']['cpu']}, {speed['machine']['torch_threads']} threads", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------- tables


def _tokens(n: int) -> str:
    if n >= 1048576 and n % 1048576 == 0:
        return f"{n // 1048576}M"
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _run_lines(data: dict[str, Any]) -> list[str]:
    machine = data["machine"]
    flags = ", ".join(machine.get("cpu_flags") or []) or "none listed"
    runs = data.get("runs")  # set when later runs added points with ``benchmarks.speed --extend``
    commands = (
        [f"- command: `{run['command']}` ({run['date']}, {run.get('wall_seconds')} s)" for run in runs]
        if runs
        else [f"- command: `{data['command']}`"]
    )
    return [
        f"- date: {data['date']}; wall time: {data.get('wall_seconds')} s",
        *commands,
        f"- machine: {machine['cpu']} ({flags}), {machine['cores']} cores, {machine['memory_gb']} GB, "
        f"torch {machine['versions'].get('torch')} with {machine['torch_threads']} threads",
    ]


def quality_tables(quality: dict[str, Any]) -> list[str]:
    """Markdown: per task, each metric by method and budget, tag mode's achieved ratio, same-subsample table."""
    lines = ["## Quality", "", *_run_lines(quality), f"- critic: {quality['model']}", "", "Methods:", ""]
    for name, entry in quality["methods"].items():
        if "error" in entry:
            lines.append(f"- **{name} could not run**: {entry['error']}")
        else:
            lines.append(f"- {entry['label']} (`{name}`): {entry['note'] or 'see benchmarks/'}")
    for task, data in quality["tasks"].items():
        lines += ["", f"### {TASK_TITLES.get(task, task)}", ""]
        lines.append(f"{data['n_examples']} examples, {data['mean_original_tokens']} o200k tokens on average.")
        for metric in data["metrics"]:
            lines += ["", *_metric_table(data, data["methods"], metric, data["n_examples"])]
        if "subsample" in data:
            sub = data["subsample"]
            entries = {name: {**data["methods"][name], "results": results} for name, results in sub["methods"].items()}
            lines += ["", f"Same first {sub['n_examples']} examples for every method ({sub['why']}):", ""]
            lines += _metric_table(data, entries, data["primary_metric"], sub["n_examples"])
        for part, same in list(data.get("part_results", {}).items())[1:]:
            known = quality["methods"]
            entries = {
                name: {"label": known.get(name, {}).get("label", name), "results": results}
                for name, results in same["methods"].items()
            }
            lines += ["", f"Part `{part}`: these methods side by side on the same {same['n_examples']} examples:", ""]
            lines += _metric_table(data, entries, data["primary_metric"], same["n_examples"])
    return lines


def _metric_table(data: dict[str, Any], entries: dict[str, Any], metric: str, n_total: int) -> list[str]:
    budgets = data["budgets"]
    lines = [
        f"| {metric} | " + " | ".join(budgets) + " | tag mode (achieved ratio) | n |",
        "|---|" + "---|" * (len(budgets) + 2),
    ]
    for name, entry in entries.items():
        if "error" in entry:
            lines.append(f"| {entry.get('label', name)} | failed: {entry['error']} |" + " |" * (len(budgets) + 1))
            continue
        results = entry.get("results", {})
        if not results:
            lines.append(
                f"| {entry.get('label', name)} | {entry.get('skipped', 'no results')} |" + " |" * (len(budgets) + 1)
            )
            continue
        cells = [_cell(results[b]["metrics"][metric]) if b in results else "" for b in budgets]
        tags = results.get("tags")
        tag_cell = f"{tags['metrics'][metric]} ({tags['achieved_ratio']}x)" if tags else ""
        n = max((r.get("n", 0) for r in results.values()), default=0)
        truncated = ", ".join(f"{b} {results[b]['truncated']}" for b in budgets if results.get(b, {}).get("truncated"))
        note = f" (share cut to budget: {truncated})" if truncated else ""
        lines.append(f"| {entry.get('label', name)}{note} | " + " | ".join(cells) + f" | {tag_cell} | {n} |")
    return lines


def speed_tables(speed: dict[str, Any]) -> list[str]:
    """Markdown: throughput and memory per method and length, and the engine's share of raw forward speed."""
    lengths = speed["lengths"]
    header = "| method | " + " | ".join(_tokens(n) for n in lengths) + " |"
    rule = "|---|" + "---|" * len(lengths)
    cells: dict[str, dict[int, dict[str, Any]]] = {}
    for point in speed["points"]:
        cells.setdefault(point["method"], {})[point["tokens"]] = point
    lines = ["## Speed and memory", "", *_run_lines(speed), f"- compression: {speed['ratio']}", ""]
    for title, key in (
        ("o200k tokens/s", "o200k_tokens_per_s"),
        ("model tokens/s", "model_tokens_per_s"),
        ("memory MB (peak RSS above baseline + text)", "memory_mb"),
    ):
        lines += [f"{title}:", "", header, rule]
        for name, points in cells.items():
            row = []
            for n in lengths:
                point = points.get(n)
                if point is None:
                    row.append("")
                elif "skipped" in point or "error" in point:
                    row.append(f"skipped: {point['skipped']}" if "skipped" in point else f"failed: {point['error']}")
                else:
                    row.append(_cell(point.get(key)))
            lines.append(f"| {name} | " + " | ".join(row) + " |")
        lines.append("")
    lines += _overhead_lines(cells, lengths)
    return lines


def _overhead_lines(cells: dict[str, dict[int, dict[str, Any]]], lengths: list[int]) -> list[str]:
    lines = []
    for engine, raw in (("ours", "ours-raw-forward"), ("tiny-decoder", "tiny-decoder-raw-forward")):
        if engine not in cells or raw not in cells:
            continue
        row = []
        for n in lengths:
            a, b = cells[engine].get(n, {}), cells[raw].get(n, {})
            ok = a.get("model_tokens_per_s") and b.get("model_tokens_per_s")
            row.append(f"{a['model_tokens_per_s']} / {b['model_tokens_per_s']}" if ok else "")
        lines += [
            f"{engine} end to end / raw forward (model tokens/s):",
            "",
            "| | " + " | ".join(_tokens(n) for n in lengths) + " |",
            "|---|" + "---|" * len(lengths),
            f"| {engine} | " + " | ".join(row) + " |",
            "",
        ]
    return lines


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="read and write the -quick files")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of the JSON files and outputs")
    args = parser.parse_args(argv)
    suffix = "-quick" if args.quick else ""
    folder = args.results
    quality = _load(folder / f"quality{suffix}.json")
    speed = _load(folder / f"speed{suffix}.json")
    written: list[Path] = []
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python -m benchmarks.report"
        + (" --quick" if args.quick else "")
        + "` from the JSON files next to this one.",
        "",
    ]
    if quality:
        for task, data in quality["tasks"].items():
            written.append(plot_quality(task, data, folder / f"quality_{task}{suffix}.png"))
            if "heatmaps" in data:
                heat = plot_needle_heatmaps(data["heatmaps"], folder / f"needle_heatmap{suffix}.png")
                written += [heat] if heat else []
        lines += [*quality_tables(quality), ""]
    # speed.json: the engine against its raw forward pass up to 1M tokens; speed_peers.json: every method
    for stem, data in (("speed", speed), ("speed_peers", _load(folder / f"speed_peers{suffix}.json"))):
        if not data:
            continue
        written.append(
            plot_speed(data, "o200k_tokens_per_s", "o200k tokens/s", folder / f"{stem}_throughput{suffix}.png")
        )
        written.append(plot_speed(data, "memory_mb", "memory (MB)", folder / f"{stem}_memory{suffix}.png"))
        lines += [f"<!-- from {stem}{suffix}.json -->", *speed_tables(data)]
    markdown = folder / f"RESULTS{suffix}.md"
    markdown.write_text("\n".join(lines) + "\n", encoding="utf-8")
    written.append(markdown)
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
