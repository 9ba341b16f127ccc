"""Merge quality JSON files of runs that split the work (tasks or methods) into one ``quality.json``.

On a 2-core CPU the full benchmark is run as separate single-threaded processes (see ``run_split.sh``); each writes
its own JSON under ``results/parts/``. This merges them: tasks are united, and for a task run in several parts the
method entries are united (each keeps its own ``n_examples``); the first part that ran a task gives the task-level
fields, the others are listed under ``parts`` with their sample sizes, so nothing is averaged across samples. Each
task's ``part_results`` keeps every part's own results (a method that also ran in an earlier part included), so
methods run side by side on a smaller sample can be compared on exactly that sample.

Usage::

    .venv/bin/python -m benchmarks.merge benchmarks/results/parts/*.json --out benchmarks/results/quality.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def merge(parts: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """One result from several part results (see the module docstring)."""
    if not parts:
        raise ValueError("nothing to merge")
    merged: dict[str, Any] = json.loads(json.dumps(parts[0]))
    merged["tasks"] = {}
    merged["methods"] = {}
    merged["failed_methods"] = {}
    merged["parts"] = []
    merged["wall_seconds"] = 0.0
    for name, part in zip(names, parts):
        merged["parts"].append(
            {"file": name, "tasks": list(part["tasks"]), "methods": list(part["methods"]), "config": part["config"]}
        )
        merged["wall_seconds"] += float(part.get("wall_seconds", 0.0))
        merged["methods"].update(part["methods"])
        merged["failed_methods"].update(part.get("failed_methods", {}))
        for task, data in part["tasks"].items():
            same_sample = {
                "n_examples": data.get("n_examples"),
                "methods": {m: e["results"] for m, e in data["methods"].items() if "results" in e},
            }
            if task not in merged["tasks"]:
                merged["tasks"][task] = json.loads(json.dumps(data))
                merged["tasks"][task]["from_parts"] = [name]
                merged["tasks"][task]["part_results"] = {name: same_sample}
                continue
            target = merged["tasks"][task]
            target["from_parts"].append(name)
            target["part_results"][name] = same_sample
            for method, entry in data["methods"].items():
                if method not in target["methods"]:
                    target["methods"][method] = entry
            if "subsample" in data:
                target.setdefault("subsamples", []).append({"part": name, **data["subsample"]})
    merged["wall_seconds"] = round(merged["wall_seconds"], 1)
    return merged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    loaded = [json.loads(p.read_text(encoding="utf-8")) for p in args.parts]
    result = merge(loaded, [p.name for p in args.parts])
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"merged {len(loaded)} parts -> {args.out}")


if __name__ == "__main__":
    main()
