"""Train an encoder critic (the embedded default) on CPU or a GPU: ``cprs train --config FILE --output DIR``.

Recipe (see the model card): HotpotQA train split at sentence / paragraph / keyword granularity plus RULER-style
synthetic tasks, paragraph-aligned 512-token windows (paragraph order reshuffled each epoch), loss = unit-level BCE
on the mean keep log-odds of each unit's tokens + ``token_loss_weight`` x token-level keep BCE (``pos_weight``) +
``tag_loss_weight`` x B/I/E cross-entropy on kept tokens; AdamW with a higher learning rate on the head and top
layers, warmup then linear decay, bf16 autocast, attention dropout 0. Checkpoints every few minutes; ``--resume``
continues from the last one with the same data order, also on another device (``device``). On the same device a
resumed run equals an uninterrupted one; on another, the dropout draws come from that device's generator, so the
weights differ from an uninterrupted run's (as they would between devices anyway).
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cprs_integrations.engine import segment
from cprs_integrations.engine.selection import token_unit_index
from cprs_integrations.engine.windows import boundary_token_starts, cut_windows, tokenize_with_offsets
from cprs_integrations.models.base import ID2LABEL, LABEL2ID, TAG_B, TAG_E, TAG_I, TAG_O
from cprs_integrations.training.data import Example, hotpot_example, hotpot_records
from cprs_integrations.training.hard_tasks import hard_examples, hotpot_hop_example
from cprs_integrations.training.synthetic import synthetic_examples

#: Model inputs of a collated batch (``token_type_ids`` only for models that take it).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that determines the trained weights (with the seed and the data files)."""

    seed: int = 13
    base_model: str = "minilm"
    init_from: str | None = None  # a trained critic folder to continue from (a second stage); relative to the CWD
    window_tokens: int = 512
    batch_windows: int = 8
    max_steps: int = 2000
    lr_head: float = 1e-4
    lr_body: float = 5e-5
    high_lr_top_layers: int = 2
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    pos_weight: float = 15.0
    token_loss_weight: float = 0.5
    tag_loss_weight: float = 0.2
    list_loss_weight: float = 0.0  # listwise loss: softmax over each window's units, the kept ones as targets
    granularity_mix: dict[str, float] = field(default_factory=lambda: {"sentence": 0.6, "paragraph": 0.2, "token": 0.2})
    synthetic_per_epoch: int = 1600
    hard_per_epoch: int = 0  # paraphrased facts with distractors and decoy chains (training/hard_tasks.py)
    hop_share: float = 0.0  # share of HotpotQA sentence-level questions given as second-hop examples
    hotpot_limit: int | None = None  # at most this many HotpotQA training questions per epoch (tests, dry runs)
    data: str | None = None  # the user's JSON-lines file (training/user_data.py): train on it instead of HotpotQA
    data_sha256: str | None = None  # sha256 of ``data`` when the run started; a changed file is refused
    holdout: float = 0.1  # share of the user's records held out (a hash of each record, not the seed)
    checkpoint_minutes: float = 10.0
    bf16: bool = False  # CUDA, or CPUs with AMX (devices.bf16_is_fast); ~20x slower on AVX2
    device: str = "cpu"  # "cpu", "cuda", "cuda:N" or "mps"; one that is not there is an error (devices.resolve_device)
    threads: int = 2
    log_every: int = 25

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)} in {path}")
        return cls(**values)


@dataclass
class WindowRecord:
    head: list[int]
    tail: list[int]
    ids: np.ndarray
    tags: np.ndarray
    unit_of_token: np.ndarray  # local unit index per token, -1 if none
    unit_labels: np.ndarray

    def __len__(self) -> int:
        return len(self.head) + len(self.ids) + len(self.tail)


def token_tags(offsets: np.ndarray, keep: tuple[tuple[int, int], ...]) -> np.ndarray:
    """BIOE tags per token: tokens whose start lies in a kept span; first B, last E, middle I, single B."""
    tags = np.full(len(offsets), TAG_O, dtype=np.int64)
    if len(offsets) == 0:
        return tags
    starts = offsets[:, 0]
    for s, e in keep:
        first = int(np.searchsorted(starts, s, side="left"))
        # a token that begins before the span but ends inside it (e.g. a leading space) counts too
        if first > 0 and offsets[first - 1, 1] > s:
            first -= 1
        last = int(np.searchsorted(starts, e, side="left"))
        if last <= first:
            continue
        tags[first:last] = TAG_I
        tags[first] = TAG_B
        if last - first > 1:
            tags[last - 1] = TAG_E
    return tags


def unit_labels(units: np.ndarray, keep: tuple[tuple[int, int], ...]) -> np.ndarray:
    """1.0 for units at least half covered by kept spans."""
    labels = np.zeros(len(units), dtype=np.float32)
    for i, (us, ue) in enumerate(units.tolist()):
        covered = sum(max(0, min(ue, e) - max(us, s)) for s, e in keep)
        labels[i] = 1.0 if covered * 2 >= (ue - us) else 0.0
    return labels


def build_windows(critic: Any, examples: list[Example], window_tokens: int) -> list[WindowRecord]:
    """Tokenize examples once and cut them into labelled, paragraph-aligned windows."""
    tokenized = tokenize_with_offsets(critic.tokenizer, [ex.text for ex in examples])
    records: list[WindowRecord] = []
    for ex, tok in zip(examples, tokenized):
        if len(tok) == 0:
            continue
        layout = critic.prompt_layout(ex.instruction, ex.query, max_prefix_tokens=window_tokens // 2)
        tags = token_tags(tok.offsets, ex.keep)
        units = segment.units_for(ex.granularity, ex.text, tok.offsets, 128)
        labels = unit_labels(units, ex.keep)
        unit_of_token = token_unit_index(units, tok.offsets)
        paragraph_starts = boundary_token_starts(tok.offsets, segment.paragraph_spans(ex.text)[:, 0])
        sentence_starts = boundary_token_starts(tok.offsets, segment.sentence_spans(ex.text)[:, 0])
        for start, end in cut_windows(len(tok), window_tokens - layout.overhead, paragraph_starts, sentence_starts):
            window_units = unit_of_token[start:end]
            present = np.unique(window_units[window_units >= 0])
            remap = np.full(len(units) + 1, -1, dtype=np.int64)
            remap[present] = np.arange(len(present))
            records.append(
                WindowRecord(
                    head=list(layout.head),
                    tail=list(layout.tail),
                    ids=tok.ids[start:end],
                    tags=tags[start:end],
                    unit_of_token=np.where(window_units >= 0, remap[window_units], -1),
                    unit_labels=labels[present],
                )
            )
    return records


def epoch_examples(config: TrainConfig, epoch: int) -> list[Example]:
    """The examples of one epoch (deterministic in seed and epoch): the training split of the user's ``data`` when
    set, else HotpotQA and synthetic tasks."""
    if config.data is not None:
        return user_examples(config)
    rng = random.Random(config.seed * 1000 + epoch)
    names = list(config.granularity_mix)
    weights = [config.granularity_mix[n] for n in names]
    records = hotpot_records("train")[: config.hotpot_limit]
    examples = []
    for record in records:
        granularity = rng.choices(names, weights)[0]
        # a draw only when hop examples are on, so that older recipes keep their exact data
        if config.hop_share and granularity == "sentence" and rng.random() < config.hop_share:
            examples.append(hotpot_hop_example(record, rng))
        else:
            examples.append(hotpot_example(record, granularity, rng))
    examples += synthetic_examples(rng, config.synthetic_per_epoch)
    if config.hard_per_epoch:
        examples += hard_examples(rng, config.hard_per_epoch)
    return examples


def user_examples(config: TrainConfig, held_out: bool = False) -> list[Example]:
    """The training (or held-out) examples of the user's ``data`` file.

    Raises:
        ValueError: the file is not the one the run started with (``data_sha256``), or a bad record.
    """
    from cprs_integrations.training.user_data import file_sha256, read_records, split_records, to_example

    if config.data is None:
        raise ValueError("this config has no data file")
    if config.data_sha256 is not None and file_sha256(config.data) != config.data_sha256:
        raise ValueError(
            f"{config.data} changed since the run started (sha256 {config.data_sha256[:12]}...); restore it or "
            "start a new run in another --output"
        )
    train_part, held_part = split_records(read_records(config.data), config.holdout)
    return [to_example(r) for r in (held_part if held_out else train_part)]


def epoch_batches(config: TrainConfig, records: list[WindowRecord], epoch: int) -> list[list[int]]:
    """Length-bucketed batches: shuffle, sort within groups of 50 batches, shuffle the batches."""
    rng = random.Random(config.seed * 7919 + epoch)
    order = list(range(len(records)))
    rng.shuffle(order)
    group = config.batch_windows * 50
    batches: list[list[int]] = []
    for g in range(0, len(order), group):
        chunk = sorted(order[g : g + group], key=lambda i: len(records[i]))
        batches += [chunk[i : i + config.batch_windows] for i in range(0, len(chunk), config.batch_windows)]
    rng.shuffle(batches)
    return batches


def collate(records: list[WindowRecord], pad_id: int, token_types: bool = True) -> dict[str, Any]:
    """Padded model inputs plus flattened labels of the window (content) tokens.

    ``token_types``: also give ``token_type_ids`` (0 prefix, 1 window), as inference does for models that have
    token types (BERT-style; not RoBERTa or DistilBERT): see :func:`~cprs_integrations.models.encoder.uses_token_types`.
    """
    import torch

    longest = max(len(r) for r in records)
    n = len(records)
    ids = np.full((n, longest), pad_id, dtype=np.int64)
    mask = np.zeros((n, longest), dtype=np.int64)
    types = np.zeros((n, longest), dtype=np.int64)
    rows, cols, tags, unit_ids, labels, unit_rows = [], [], [], [], [], []
    unit_offset = 0
    for r, rec in enumerate(records):
        seq = [*rec.head, *rec.ids.tolist(), *rec.tail]
        ids[r, : len(seq)] = seq
        mask[r, : len(seq)] = 1
        types[r, len(rec.head) : len(seq)] = 1
        positions = np.arange(len(rec.head), len(rec.head) + len(rec.ids))
        rows.append(np.full(len(positions), r))
        cols.append(positions)
        tags.append(rec.tags)
        unit_ids.append(np.where(rec.unit_of_token >= 0, rec.unit_of_token + unit_offset, -1))
        labels.append(rec.unit_labels)
        unit_rows.append(np.full(len(rec.unit_labels), r))
        unit_offset += len(rec.unit_labels)
    inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    if token_types:
        inputs["token_type_ids"] = torch.from_numpy(types)
    return {
        **inputs,
        "rows": torch.from_numpy(np.concatenate(rows)),
        "cols": torch.from_numpy(np.concatenate(cols)),
        "tags": torch.from_numpy(np.concatenate(tags)),
        "unit_ids": torch.from_numpy(np.concatenate(unit_ids)),
        "unit_labels": torch.from_numpy(np.concatenate(labels)),
        "unit_rows": torch.from_numpy(np.concatenate(unit_rows).astype(np.int64)),
    }


def critic_loss(logits: Any, batch: dict[str, Any], config: TrainConfig) -> tuple[Any, dict[str, float]]:
    """Unit BCE + token keep BCE + B/I/E cross-entropy (+ the listwise loss when ``list_loss_weight`` > 0), from the
    content-token logits."""
    import torch
    import torch.nn.functional as F

    token_logits = logits[batch["rows"], batch["cols"]].float()  # (N, 4)
    tags = batch["tags"]
    keep_logit = torch.logsumexp(token_logits[:, [TAG_B, TAG_I, TAG_E]], dim=-1) - token_logits[:, TAG_O]
    is_keep = (tags != TAG_O).float()
    pos_weight = keep_logit.new_tensor(config.pos_weight)
    token_loss = F.binary_cross_entropy_with_logits(keep_logit, is_keep, pos_weight=pos_weight)
    unit_ids = batch["unit_ids"]
    valid = unit_ids >= 0
    n_units = int(batch["unit_labels"].shape[0])
    if n_units and bool(valid.any()):
        sums = keep_logit.new_zeros(n_units).index_add(0, unit_ids[valid], keep_logit[valid])
        counts = keep_logit.new_zeros(n_units).index_add(0, unit_ids[valid], keep_logit.new_ones(int(valid.sum())))
        has = counts > 0
        unit_logit = sums[has] / counts[has]
        unit_loss = F.binary_cross_entropy_with_logits(unit_logit, batch["unit_labels"][has])
        list_loss = (
            listwise_loss(unit_logit, batch["unit_labels"][has], batch["unit_rows"][has])
            if config.list_loss_weight
            else unit_loss * 0.0
        )
    else:
        unit_loss = list_loss = keep_logit.sum() * 0.0
    kept = tags != TAG_O
    tag_loss = F.cross_entropy(token_logits[kept], tags[kept]) if bool(kept.any()) else keep_logit.sum() * 0.0
    loss = unit_loss + config.token_loss_weight * token_loss + config.tag_loss_weight * tag_loss
    parts = {"unit": unit_loss.item(), "token": token_loss.item(), "tag": tag_loss.item()}
    if config.list_loss_weight:
        loss = loss + config.list_loss_weight * list_loss
        parts["list"] = list_loss.item()
    return loss, parts


def listwise_loss(unit_logit: Any, labels: Any, rows: Any) -> Any:
    """ListNet-style cross-entropy per window: softmax over the window's unit logits against the kept units spread
    evenly (Cao et al. 2007, "Learning to Rank: From Pairwise Approach to Listwise Approach"), averaged over windows
    with a kept and a dropped unit; it rewards ranking the right unit first, which a tight budget needs.

    Args:
        unit_logit: ``(U,)`` mean keep log-odds of each unit.
        labels: ``(U,)`` 1.0 for kept units.
        rows: ``(U,)`` window index of each unit.
    """
    import torch

    losses = []
    for row in torch.unique(rows).tolist():
        members = rows == row
        target = labels[members]
        if not (bool((target > 0.5).any()) and bool((target < 0.5).any())):
            continue
        log_p = torch.log_softmax(unit_logit[members], dim=0)
        losses.append(-(log_p * target).sum() / target.sum())
    return torch.stack(losses).mean() if losses else unit_logit.sum() * 0.0


def new_critic_model(config: TrainConfig) -> tuple[Any, Any]:
    """The model to train (attention dropout 0: the CPU fast path).

    The base encoder with a fresh 4-way head, or, with ``init_from``, a critic trained before (weights loaded in fp32).
    """
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from cprs_integrations.models.assets import minilm_dir

    if config.init_from is not None:
        folder = Path(config.init_from)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"init_from={config.init_from!r}: no critic folder with a config.json there")
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForTokenClassification.from_pretrained(
            folder,
            attention_probs_dropout_prob=0.0,
            local_files_only=True,
            attn_implementation="sdpa",
            dtype=torch.float32,
        )
        if model.config.num_labels != 4:
            raise ValueError(f"init_from={config.init_from!r} has {model.config.num_labels} labels; a critic has 4")
        return model, tokenizer
    base = str(minilm_dir()) if config.base_model == "minilm" else config.base_model
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    model = AutoModelForTokenClassification.from_pretrained(
        base,
        num_labels=4,
        id2label=ID2LABEL,
        label2id=LABEL2ID,
        attention_probs_dropout_prob=0.0,
        local_files_only=True,
        attn_implementation="sdpa",
    )
    return model, tokenizer


def _optimizer(model: Any, config: TrainConfig) -> Any:
    import torch

    high = top_layer_prefixes(model, config.high_lr_top_layers)
    head, body = [], []
    for name, param in model.named_parameters():
        (head if name.startswith("classifier") or name.startswith(high) else body).append(param)
    return torch.optim.AdamW(
        [{"params": head, "lr": config.lr_head}, {"params": body, "lr": config.lr_body}],
        weight_decay=config.weight_decay,
    )


def top_layer_prefixes(model: Any, count: int) -> tuple[str, ...]:
    """Parameter-name prefixes of the ``count`` top transformer layers, found in the model itself: the module
    list holding ``config.num_hidden_layers`` layers (``bert.encoder.layer``, ``roberta.encoder.layer``,
    ``distilbert.transformer.layer``, ...).

    Raises:
        ValueError: no such module list (a base this trainer does not know how to split).
    """
    import torch

    n_layers = int(model.config.num_hidden_layers)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
            return tuple(f"{name}.{i}." for i in range(max(0, n_layers - count), n_layers))
    raise ValueError(
        f"cannot find the {n_layers} transformer layers of {type(model).__name__} (a ModuleList of that length)"
    )


def _lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    return max(0.0, (config.max_steps - step) / max(1, config.max_steps - config.warmup_steps))


def train(
    config: TrainConfig,
    output: str | Path,
    resume: bool = False,
    stop_after_minutes: float | None = None,
    stop_at_step: int | None = None,
) -> Path:
    """Train and save a critic to ``output`` (checkpoints in ``output/checkpoint``).

    Args:
        config: The recipe.
        output: Folder for the final critic (standard HF token-classification layout, bf16 safetensors).
        resume: Continue from ``output/checkpoint`` if it exists.
        stop_after_minutes: Save a checkpoint and return after this long (resume later to finish).
        stop_at_step: Finish early at this step (the LR schedule still follows ``max_steps``) and save the critic.
    """
    import torch

    from cprs_integrations.models.devices import resolve_device
    from cprs_integrations.models.encoder import EncoderCritic, uses_token_types

    device = torch.device(resolve_device(config.device))  # before anything is built: a missing GPU fails at once
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = output / "checkpoint"
    _check_run_config(output, config, resume)
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    model, tokenizer = new_critic_model(config)
    critic = EncoderCritic(model, tokenizer, name_or_path="training")  # for its tokenizer and prompt layout
    model.to(device)
    model.train()
    optimizer = _optimizer(model, config)
    step, epoch, position = 0, 0, 0
    history: list[dict[str, float]] = []
    elapsed_before = 0.0
    if resume and (checkpoint_dir / "state.pt").is_file():
        state = torch.load(checkpoint_dir / "state.pt", weights_only=False, map_location="cpu")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, position = state["step"], state["epoch"], state["position"]
        history, elapsed_before = state["history"], state["elapsed"]
        if "torch_rng" in state:  # dropout draws continue as if the run had not stopped
            torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        logger.info("resumed at step %d (epoch %d, batch %d)", step, epoch, position)
    started = time.time()
    last_checkpoint = time.time()
    tokens_seen, window_started = 0, time.time()
    pad_id = tokenizer.pad_token_id or 0
    token_types = uses_token_types(model.config)
    last_step = config.max_steps if stop_at_step is None else min(stop_at_step, config.max_steps)
    while step < last_step:
        records = build_windows(critic, epoch_examples(config, epoch), config.window_tokens)
        batches = epoch_batches(config, records, epoch)
        logger.info("epoch %d: %d windows, %d batches", epoch, len(records), len(batches))
        while position < len(batches) and step < last_step:
            batch = collate([records[i] for i in batches[position]], pad_id, token_types)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            for group in optimizer.param_groups:
                group["lr"] = (config.lr_head if group is optimizer.param_groups[0] else config.lr_body) * _lr_factor(
                    step, config
                )
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                logits = model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}).logits
            loss, parts = critic_loss(logits, batch, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            step += 1
            position += 1
            tokens_seen += int(batch["attention_mask"].sum())
            history.append({"step": step, "loss": loss.item(), **parts})
            if step % config.log_every == 0:
                rate = tokens_seen / max(1e-9, time.time() - window_started)
                recent = history[-config.log_every :]
                mean = {k: sum(h[k] for h in recent) / len(recent) for k in recent[-1] if k != "step"}
                eta = (config.max_steps - step) * (time.time() - window_started) / max(1, config.log_every) / 60
                parts_text = " ".join(f"{k} {v:.4f}" for k, v in mean.items() if k != "loss")
                logger.info(
                    "step %d/%d epoch %d loss %.4f (%s) %.0f tok/s eta %.0f min",
                    step,
                    config.max_steps,
                    epoch,
                    mean["loss"],
                    parts_text,
                    rate,
                    eta,
                )
                tokens_seen, window_started = 0, time.time()
            out_of_time = stop_after_minutes is not None and time.time() - started > stop_after_minutes * 60
            if time.time() - last_checkpoint > config.checkpoint_minutes * 60 or out_of_time:
                _save_checkpoint(
                    checkpoint_dir,
                    model,
                    optimizer,
                    step,
                    epoch,
                    position,
                    history,
                    elapsed_before + time.time() - started,
                )
                _save_critic(model, tokenizer, output / "latest", config, step, elapsed_before + time.time() - started)
                last_checkpoint = time.time()
                if out_of_time:
                    logger.info("stopping after %.0f minutes at step %d; --resume continues", stop_after_minutes, step)
                    return output
        if position >= len(batches):
            epoch, position = epoch + 1, 0
    elapsed = elapsed_before + time.time() - started
    _save_checkpoint(checkpoint_dir, model, optimizer, step, epoch, position, history, elapsed)
    _save_critic(model, tokenizer, output, config, step, elapsed)
    logger.info("done: %d steps in %.1f minutes -> %s", step, elapsed / 60, output)
    return output


#: The run's recipe, written when it starts; a resume must bring the same one (data file and its sha256 included).
RUN_CONFIG = "run_config.json"
#: Config fields that do not change the weights: a resume may change them.
_RESUMABLE_CHANGES = frozenset({"checkpoint_minutes", "log_every", "device"})


def _check_run_config(output: Path, config: TrainConfig, resume: bool) -> None:
    """Write ``output/run_config.json``, or on resume refuse a recipe that differs from the stored one."""
    path = output / RUN_CONFIG
    current = asdict(config)
    if resume and path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        # a run started before a field existed ran with its default
        defaults = asdict(TrainConfig())
        stored = {**{k: v for k, v in defaults.items() if k not in stored}, **stored}
        changed = sorted(
            k for k in set(stored) | set(current) if k not in _RESUMABLE_CHANGES and stored.get(k) != current.get(k)
        )
        if "data_sha256" in changed:
            raise ValueError(
                f"cannot resume {output}: {stored.get('data')} changed since the run started (sha256 "
                f"{str(stored.get('data_sha256'))[:12]}... -> {str(current.get('data_sha256'))[:12]}...); restore it "
                "or start a new run in another --output"
            )
        if changed:
            details = ", ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in changed)
            raise ValueError(f"cannot resume {output}: the run started with another recipe ({details})")
    path.write_text(json.dumps(current, indent=2), encoding="utf-8")


def _save_checkpoint(
    folder: Path,
    model: Any,
    optimizer: Any,
    step: int,
    epoch: int,
    position: int,
    history: list[dict[str, float]],
    elapsed: float,
) -> None:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "epoch": epoch,
        "position": position,
        "history": history,
        "elapsed": elapsed,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(model.device) if model.device.type == "cuda" else None,
    }
    torch.save(state, folder / "state.tmp")
    (folder / "state.tmp").replace(folder / "state.pt")


def _save_critic(model: Any, tokenizer: Any, folder: Path, config: TrainConfig, step: int, elapsed: float) -> None:
    """Save bf16 weights in the HF token-classification layout, plus the training facts."""
    import copy

    import torch

    folder.mkdir(parents=True, exist_ok=True)
    export = copy.deepcopy(model).to("cpu", torch.bfloat16).eval()
    export.config.cprs_critic = {"kind": "encoder", "tags": list(ID2LABEL.values()), "trained_steps": step}
    export.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    facts = {"config": asdict(config), "steps": step, "minutes": round(elapsed / 60, 1), "max_steps": config.max_steps}
    (folder / "training_facts.json").write_text(json.dumps(facts, indent=2))


def lr_schedule_preview(config: TrainConfig) -> list[float]:
    """LR factor at a few steps (for docs and sanity checks)."""
    return [_lr_factor(s, config) for s in (0, config.warmup_steps, config.max_steps // 2, config.max_steps - 1)]
