"""Load a critic from a local folder or a hub id: detect its kind from ``config.json`` and dispatch.

* ``model_type == "qwen2"`` -> :class:`~cprs_integrations.models.decoder.DecoderCritic` (QwenLong-CPRS layout).
* a ``*ForTokenClassification`` config with labels ``B, I, O, E`` ->
  :class:`~cprs_integrations.models.encoder.EncoderCritic`.
* anything else is an error that says what a CPRS critic looks like.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from cprs_integrations.models.base import TAGS, TokenCritic
from cprs_integrations.models.checkpoint import CheckpointLocation, read_config
from cprs_integrations.models.devices import resolve_device, resolve_dtype

logger = logging.getLogger(__name__)

#: The embedded default critic shipped inside the package.
DEFAULT_CRITIC_DIR = Path(__file__).resolve().parent / "default"
DECODER_MODEL_TYPES = ("qwen2",)


def default_critic_path() -> Path:
    """Folder of the embedded default critic.

    Raises:
        FileNotFoundError: if its weights are not part of this install.
    """
    if not (DEFAULT_CRITIC_DIR / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the embedded default critic is missing from this install ({DEFAULT_CRITIC_DIR}/model.safetensors); "
            "reinstall cprs-integrations or pass a model path"
        )
    return DEFAULT_CRITIC_DIR


def detect_kind(config: Any, where: str) -> str:
    """``"decoder"`` or ``"encoder"`` from a transformers config; ``ValueError`` if it is no CPRS critic."""
    model_type = getattr(config, "model_type", None)
    if model_type in DECODER_MODEL_TYPES:
        return "decoder"
    labels = tuple(str(v) for _, v in sorted((getattr(config, "id2label", None) or {}).items()))
    architectures = getattr(config, "architectures", None) or []
    if labels == TAGS and any(a.endswith("ForTokenClassification") for a in architectures):
        return "encoder"
    raise ValueError(
        f"{where} is not a CPRS critic: expected a Qwen2 config (model_type 'qwen2', with cls_head weights) or a "
        f"*ForTokenClassification config with id2label {dict(enumerate(TAGS))}; found model_type {model_type!r}, "
        f"architectures {architectures}, labels {list(labels)}"
    )


def load_critic(
    model: str | os.PathLike[str] | None = None,
    *,
    device: str | None = None,
    dtype: Any = "auto",
    revision: str | None = None,
    local_files_only: bool = False,
    trust_remote_code: bool = False,
    bidirectional_from: int | None = None,
    batch_size: int | None = None,
    device_map: str | dict[str, Any] | None = None,
) -> TokenCritic:
    """Load a critic (see :meth:`cprs_integrations.CPRSEngine.from_pretrained` for the arguments).

    Raises:
        ValueError: not a CPRS critic, weights or tokenizer that do not match the config, unknown/unavailable
            device, unknown dtype, bad ``bidirectional_from``.
        FileNotFoundError: a path that is no folder (``./critic``, ``a/b/c``, or ``org/name`` that is neither a
            folder nor a loadable hub repository).
    """
    import torch

    if device_map is not None and device is not None:
        raise ValueError("pass either device or device_map, not both")
    location = CheckpointLocation.of(
        default_critic_path() if model is None else model, revision=revision, local_files_only=local_files_only
    )
    where = location.where
    if device_map is not None:
        resolved_device = "auto"
        dtype_device = "cuda" if torch.cuda.is_available() else "cpu"  # accelerate fills GPUs first
    else:
        resolved_device = dtype_device = resolve_device(device)
    config = read_config(location, trust_remote_code=trust_remote_code)
    kind = detect_kind(config, where)
    torch_dtype = resolve_dtype(dtype, dtype_device, critic_kind=kind)
    common = {
        "dtype": torch_dtype,
        "revision": revision,
        "local_files_only": local_files_only,
        "trust_remote_code": trust_remote_code,
        "batch_size": batch_size,
    }
    if kind == "encoder":
        if bidirectional_from is not None:
            raise ValueError("bidirectional_from applies to decoder critics only; this is an encoder critic")
        if device_map is not None:
            raise ValueError("device_map is for decoder critics larger than one GPU; pass device= for an encoder")
        from cprs_integrations.models.encoder import EncoderCritic

        critic: TokenCritic = EncoderCritic.from_pretrained(where, device=resolved_device, **common)
    else:
        from cprs_integrations.models.decoder import DecoderCritic

        critic = DecoderCritic.from_pretrained(
            where,
            device=None if device_map is not None else resolved_device,
            device_map=device_map,
            bidirectional_from=bidirectional_from,
            **common,
        )
    logger.info("cprs: loaded %s critic from %s on %s (%s)", kind, where, critic.device, torch_dtype)
    return critic
