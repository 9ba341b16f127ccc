"""Weight interpolation of two critics of one architecture (WiSE-FT, Wortsman et al. 2022, arXiv 2109.01903).

A fine-tuned critic gains on what its new data covers and can lose on what it saw before (stage 4 of the default:
better on HotpotQA dev and our dev sets, one question lost on two small sets at 50x). WiSE-FT keeps much of both:
the weights ``(1 - alpha) * base + alpha * tuned``, tensor by tensor. ``alpha=0`` is the base, ``1`` the tuned
critic.

    $ python -m cprs_integrations.training.interpolate cprs_integrations/models/default runs/critic-v4 \
        --alpha 0.5 --output runs/critic-v4-wise50

The output folder is the tuned folder (config, tokenizer) with the interpolated ``model.safetensors`` (computed in
fp32, stored in the tuned weights' dtype) and ``training_facts.json`` extended with an ``interpolation`` record.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

WEIGHTS = "model.safetensors"
FACTS = "training_facts.json"


def interpolate(base: str | Path, tuned: str | Path, alpha: float, output: str | Path) -> Path:
    """Write the critic ``(1 - alpha) * base + alpha * tuned`` to ``output``; returns ``output``.

    Args:
        base: Critic folder with ``model.safetensors`` (the critic the tuned one started from).
        tuned: Critic folder of the same architecture: same tensor names and shapes.
        alpha: Weight of ``tuned``, in ``[0, 1]``.
        output: New folder (must not exist, and must not be ``base`` or ``tuned``).

    Raises:
        ValueError: ``alpha`` outside ``[0, 1]``; tensor names or shapes that differ (the names are listed);
            ``output`` existing.
        FileNotFoundError: a folder without ``model.safetensors``.
    """
    from safetensors.torch import load_file, save_file

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    base, tuned, output = Path(base), Path(tuned), Path(output)
    if output.exists():
        raise ValueError(f"output {output} exists: choose a new folder")
    for folder in (base, tuned):
        if not (folder / WEIGHTS).is_file():
            raise FileNotFoundError(f"no {WEIGHTS} in {folder}")
    a, b = load_file(str(base / WEIGHTS)), load_file(str(tuned / WEIGHTS))
    if a.keys() != b.keys():
        raise ValueError(f"the critics differ in tensors: {sorted(a.keys() ^ b.keys())}")
    shapes = sorted(name for name in a if a[name].shape != b[name].shape)
    if shapes:
        raise ValueError(f"the critics differ in the shapes of: {shapes}")
    mixed = {}
    for name, t in b.items():
        if t.is_floating_point():
            mixed[name] = ((1.0 - alpha) * a[name].float() + alpha * t.float()).to(t.dtype).contiguous()
        else:  # integer buffers (position ids): equal in both by construction
            mixed[name] = t.clone()
    shutil.copytree(tuned, output, ignore=shutil.ignore_patterns(WEIGHTS, "*.pt", "*.tmp", "checkpoint*"))
    save_file(mixed, str(output / WEIGHTS), metadata={"format": "pt"})
    facts_path = output / FACTS
    facts = json.loads(facts_path.read_text(encoding="utf-8")) if facts_path.is_file() else {}
    facts["interpolation"] = {
        "method": "WiSE-FT (arXiv 2109.01903)",
        "base": str(base),
        "tuned": str(tuned),
        "alpha": alpha,
        "tensors": len(mixed),
    }
    facts_path.write_text(json.dumps(facts, indent=2), encoding="utf-8")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="critic folder the tuned one started from")
    parser.add_argument("tuned", help="fine-tuned critic folder")
    parser.add_argument("--alpha", type=float, required=True, help="weight of the tuned critic, in [0, 1]")
    parser.add_argument("--output", required=True, help="new critic folder")
    args = parser.parse_args(argv)
    print(interpolate(args.base, args.tuned, args.alpha, args.output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
