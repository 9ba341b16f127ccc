"""Fine-tune a critic on the user's own records: ``cprs train --data FILE.jsonl --output DIR``.

The recipe (``configs/user_data.json``): start from the shipped critic (or ``init_from``), train on the file's
training split only, ``epochs`` passes over its windows (``max_steps`` and a 10% warmup derived from the window
count), the learning rates of the first stage of the shipped critic (1e-4 head and top layers, 5e-5 below), windows
of up to 512 tokens (the starting critic's positions at most). The file's absolute path and sha256 go into the run's
config (``run_config.json`` in the output folder): a resume with another file, or a changed one, is refused.

At the end the held-out split (``holdout``, 10% by default) is evaluated with the starting critic and the trained
one, next to BM25 (:func:`~cprs_integrations.training.evaluate.evaluate`), and written to ``heldout_report.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cprs_integrations.training.evaluate import evaluate
from cprs_integrations.training.trainer import TrainConfig, build_windows, new_critic_model, train, user_examples
from cprs_integrations.training.user_data import DEFAULT_HOLDOUT, file_sha256, read_records, split_records

#: The recipe for a user's few hundred records.
USER_RECIPE = Path(__file__).resolve().parent / "configs" / "user_data.json"
#: Passes over the training split by default.
DEFAULT_EPOCHS = 4
#: Ratios of the held-out report.
REPORT_RATIOS = (0.1, 0.2, 0.3)
#: Name of the held-out report in the output folder.
REPORT_FILE = "heldout_report.json"


def fine_tune_config(
    data: str | Path,
    *,
    init_from: str | Path | None = None,
    epochs: int = DEFAULT_EPOCHS,
    holdout: float = DEFAULT_HOLDOUT,
    seed: int | None = None,
    threads: int | None = None,
    recipe: str | Path = USER_RECIPE,
    device: str | None = None,
) -> TrainConfig:
    """The training config of a fine-tune on ``data`` (checked here, before any training).

    Args:
        data: The JSON-lines file (format: :mod:`cprs_integrations.training.user_data`).
        init_from: The critic folder to start from (default: the shipped critic).
        epochs: Passes over the training split.
        holdout: Share of records held out for the report.
        seed: Seed of the data order and the head's initialisation (default: the recipe's).
        threads: torch CPU threads (default: the recipe's, 2).
        recipe: A config file with the other settings.
        device: Where to train: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (default: the recipe's, cpu).

    Raises:
        ValueError: a bad record (line and field named), ``epochs < 1``, a bad ``holdout``, a ``device`` that is
            not available here.
        FileNotFoundError: no data file, or no critic at ``init_from``.
    """
    from cprs_integrations.models.devices import resolve_device
    from cprs_integrations.models.encoder import EncoderCritic
    from cprs_integrations.models.loading import default_critic_path

    if epochs < 1:
        raise ValueError(f"epochs={epochs!r}: expected at least 1")
    if device is not None:
        resolve_device(device)  # checked before the records are read
    train_records, _ = split_records(read_records(data), holdout)  # every record checked here
    start = Path(init_from) if init_from is not None else default_critic_path()
    config = TrainConfig.from_file(recipe)
    config = replace(
        config,
        init_from=str(start.resolve()),
        data=str(Path(data).resolve()),
        data_sha256=file_sha256(data),
        holdout=holdout,
        seed=config.seed if seed is None else seed,
        threads=config.threads if threads is None else threads,
        device=config.device if device is None else device,
    )
    model, tokenizer = new_critic_model(config)
    positions = int(getattr(model.config, "max_position_embeddings", config.window_tokens))
    config.window_tokens = min(config.window_tokens, positions)
    critic = EncoderCritic(model, tokenizer, name_or_path=config.init_from)
    windows = len(build_windows(critic, user_examples(config), config.window_tokens))
    if windows == 0:
        raise ValueError(f"{data}: the {len(train_records)} training records hold no text to train on")
    config.max_steps = epochs * math.ceil(windows / config.batch_windows)
    config.warmup_steps = max(1, round(0.1 * config.max_steps))
    return config


def fine_tune(
    config: TrainConfig,
    output: str | Path,
    *,
    resume: bool = False,
    stop_after_minutes: float | None = None,
    stop_at_step: int | None = None,
    ratios: Sequence[float] = REPORT_RATIOS,
) -> dict[str, Any]:
    """Train (:func:`~cprs_integrations.training.trainer.train`), then evaluate the held-out split.

    Returns:
        The report written to ``output/heldout_report.json``: ``critic`` (the folder evaluated: ``output``, or
        ``output/latest`` when the run stopped early), ``steps``, ``finished``, ``heldout`` (records), and
        ``before`` / ``after`` (:func:`~cprs_integrations.training.evaluate.evaluate` of the starting and the
        trained critic; absent when nothing is held out).
    """
    output = Path(
        train(config, output, resume=resume, stop_after_minutes=stop_after_minutes, stop_at_step=stop_at_step)
    )
    critic_dir, steps = _newest_critic(output)
    last_step = config.max_steps if stop_at_step is None else min(stop_at_step, config.max_steps)
    held_out = user_examples(config, held_out=True)
    report: dict[str, Any] = {
        "critic": str(critic_dir),
        "steps": steps,
        "finished": steps >= last_step,
        "heldout": len(held_out),
        "data": config.data,
    }
    if held_out:
        report["before"] = _evaluate_critic(config.init_from, held_out, ratios)
        report["after"] = _evaluate_critic(critic_dir, held_out, ratios)
    (output / REPORT_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


def _newest_critic(output: Path) -> tuple[Path, int]:
    """The saved critic with the most steps: the final one, or ``latest/`` of a run that stopped early."""
    found = []
    for folder in (output, output / "latest"):
        facts = folder / "training_facts.json"
        if facts.is_file():
            found.append((int(json.loads(facts.read_text(encoding="utf-8"))["steps"]), folder != output, folder))
    if not found:
        raise FileNotFoundError(f"{output}: no trained critic saved yet")
    steps, _, folder = max(found, key=lambda item: (item[0], not item[1]))
    return folder, steps


def _evaluate_critic(folder: str | Path | None, examples: list[Any], ratios: Sequence[float]) -> dict[str, Any]:
    from cprs_integrations.engine.engine import CPRSEngine

    engine = CPRSEngine.from_pretrained(folder, device="cpu")
    try:
        return evaluate(engine, examples, ratios)
    finally:
        engine.close()
