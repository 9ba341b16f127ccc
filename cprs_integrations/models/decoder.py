"""The Qwen2 decoder critic of QwenLong-CPRS (the released ``Tongyi-Zhiwen/QwenLong-CPRS-7B`` layout).

Checkpoint layout: ``config.json`` with ``model_type: "qwen2"``, safetensors (single or sharded) holding
a ``Qwen2Model`` under ``model.*`` plus ``cls_head.weight`` ``[4, hidden]`` and ``cls_head.bias`` ``[4]``, and
the Qwen tokenizer files. An ``lm_head.weight`` left in the checkpoint is ignored.

The forward pass is transformers' own Qwen2 stack with one change: layers from ``bidirectional_from`` on
attend bidirectionally (padding mask only), the layers below stay causal. Positions restart at 0 in every
window and no KV cache is kept. Layout per window (official)::

    <|im_start|>system\\n{instruction}<|im_end|>\\n<|im_start|>user\\n{query}<|im_end|>\\n<|im_start|>context\\n{window}
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2Model, Qwen2PreTrainedModel

from cprs_integrations.models.base import (
    TAGS,
    PromptLayout,
    TokenCritic,
    layouts_for,
    pad_batch,
    truncate_prefix,
    warn_long_prefix,
)
from cprs_integrations.models.checkpoint import (
    CheckpointLocation,
    check_loading_info,
    check_weights,
    load_tokenizer,
    read_config,
)
from cprs_integrations.models.devices import resolve_device
from cprs_integrations.models.progress import no_progress_bars
from cprs_integrations.models.tokenization import raw_backend

logger = logging.getLogger(__name__)

#: Layers of the released 28-layer QwenLong-CPRS-7B that stay causal (layers 22-28 are bidirectional).
RELEASED_NUM_LAYERS = 28
RELEASED_BIDIRECTIONAL_FROM = 21
#: Our own config key; ``save_pretrained`` writes it so a saved critic reloads with the same attention split.
CONFIG_KEY = "cprs_bidirectional_from"
#: Attention backends that take our explicit 4D additive masks.
SUPPORTED_ATTENTION = ("sdpa", "eager")
#: Longest sequence we advertise even when the config allows more (RoPE tables beyond this are untested).
MAX_SEQUENCE_CAP = 131072
DEFAULT_WINDOW_TOKENS = 8192


def resolve_bidirectional_from(config: Any, requested: int | None = None) -> int:
    """Index of the first bidirectional layer: ``requested``, else the config key, else 21 for 28 layers.

    Args:
        config: A Qwen2 config.
        requested: An explicit value that overrides the config.

    Raises:
        ValueError: for a depth other than 28 with neither ``requested`` nor ``cprs_bidirectional_from``
            in the config, or for a value outside ``0 .. num_hidden_layers``.

    Examples:
        >>> from transformers import Qwen2Config
        >>> resolve_bidirectional_from(Qwen2Config(num_hidden_layers=28))
        21
    """
    num_layers = int(config.num_hidden_layers)
    if requested is not None:
        value, source = requested, "bidirectional_from"
    elif getattr(config, CONFIG_KEY, None) is not None:
        value, source = getattr(config, CONFIG_KEY), f"config.json {CONFIG_KEY}"
    elif num_layers == RELEASED_NUM_LAYERS:
        return RELEASED_BIDIRECTIONAL_FROM
    else:
        raise ValueError(
            f"cannot tell which layers of this {num_layers}-layer decoder critic are bidirectional: "
            f"pass bidirectional_from=<index of the first bidirectional layer, 0..{num_layers}> (the "
            f"released 28-layer QwenLong-CPRS-7B uses {RELEASED_BIDIRECTIONAL_FROM}) or add {CONFIG_KEY!r} "
            "to its config.json"
        )
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= num_layers:
        raise ValueError(
            f"{source} must be an integer in 0..{num_layers} (the number of layers; {num_layers} means "
            f"all layers causal), got {value!r}"
        )
    return value


def check_attention_implementation(name: str | None) -> str:
    """Return ``name`` (default ``"sdpa"``) if it takes explicit 4D masks.

    Raises:
        ValueError: for flash-attention and any other backend that cannot take our custom masks.
    """
    name = name or "sdpa"
    if "flash" in name:
        raise ValueError(
            f"attn_implementation {name!r} is not supported by the decoder critic: it needs custom 4D "
            "attention masks (causal lower layers, bidirectional upper layers), which flash-attention "
            f"cannot take; use one of {SUPPORTED_ATTENTION}"
        )
    if name not in SUPPORTED_ATTENTION:
        raise ValueError(f"attn_implementation {name!r} is not supported; use one of {SUPPORTED_ATTENTION}")
    return name


class Qwen2CriticModel(Qwen2PreTrainedModel):
    """A Qwen2 backbone whose upper layers attend bidirectionally, with a 4-way BIOE token head.

    Weight names match the released checkpoint (``model.*``, ``cls_head.*``), so ``from_pretrained`` with
    ``dtype=`` and ``device_map=`` works as for any transformers model.

    Args:
        config: A ``Qwen2Config``; ``config.cprs_bidirectional_from`` picks the first bidirectional layer (see
            :func:`resolve_bidirectional_from`).

    Examples:
        >>> from transformers import Qwen2Config
        >>> config = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        ...                      num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
        ...                      cprs_bidirectional_from=2)
        >>> model = Qwen2CriticModel(config)
        >>> model(torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1, 1]])).shape
        torch.Size([1, 3, 4])
    """

    # The released checkpoint keeps its training-time LM head; the critic never uses it.
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]  # noqa: RUF012 (transformers reads a class attribute)
    _supports_flash_attn = False
    _supports_flex_attn = False

    def __init__(self, config: Qwen2Config):
        super().__init__(config)
        self.model = Qwen2Model(config)
        self.cls_head = nn.Linear(config.hidden_size, len(TAGS))
        self.set_bidirectional_from(resolve_bidirectional_from(config))
        self.post_init()

    @property
    def bidirectional_from(self) -> int:
        """Index of the first bidirectional layer (``num_hidden_layers`` = all causal)."""
        return int(getattr(self.config, CONFIG_KEY))

    def set_bidirectional_from(self, value: int) -> None:
        """Change the attention split; stored on the config so ``save_pretrained`` keeps it."""
        value = resolve_bidirectional_from(self.config, value)
        setattr(self.config, CONFIG_KEY, value)
        for index, layer in enumerate(self.model.layers):
            layer.self_attn.is_causal = index < value

    def attention_masks(self, attention_mask: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Additive float masks (0 = attend, dtype min = masked): ``(causal + padding, padding only)``.

        Args:
            attention_mask: ``(batch, length)`` with 1 for real tokens and 0 for padding.
            dtype: The hidden-state dtype.

        Returns:
            ``(batch, 1, length, length)`` causal mask and ``(batch, 1, 1, length)`` bidirectional mask; the
            latter broadcasts over queries in both sdpa and eager attention, so no ``length x length`` copy.
        """
        length = attention_mask.shape[-1]
        keys = attention_mask.bool()[:, None, None, :]
        triangle = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
        minimum = torch.finfo(dtype).min
        zero = torch.zeros((), dtype=dtype, device=attention_mask.device)
        causal = torch.where(keys & triangle, zero, minimum)
        bidirectional = torch.where(keys, zero, minimum)
        return causal, bidirectional

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """BIOE logits ``(batch, length, 4)`` for right-padded ``input_ids``; positions start at 0 per row."""
        check_attention_implementation(self.config._attn_implementation)
        backbone = self.model
        hidden = backbone.embed_tokens(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(hidden.device)
        position_ids = torch.arange(input_ids.shape[1], device=hidden.device).unsqueeze(0)
        position_embeddings = backbone.rotary_emb(hidden, position_ids)
        causal, bidirectional = self.attention_masks(attention_mask, hidden.dtype)
        split = self.bidirectional_from
        for index, layer in enumerate(backbone.layers[: self.config.num_hidden_layers]):
            hidden = layer(
                hidden,
                attention_mask=bidirectional if index >= split else causal,
                position_ids=position_ids,
                position_embeddings=position_embeddings,
                # No cache argument: the layer's default is no cache, and the argument's name changes across
                # transformers 5.x (``past_key_values`` is deprecated for ``cache`` and goes in 5.40).
            )
        return self.cls_head(backbone.norm(hidden))


class DecoderCritic(TokenCritic):
    """Scores windows with a QwenLong-CPRS decoder critic (causal lower layers, bidirectional upper layers).

    Args:
        model: A :class:`Qwen2CriticModel`.
        tokenizer: The Qwen fast tokenizer (must know ``<|im_start|>`` and ``<|im_end|>``).
        name_or_path: Where it came from (for messages and caching).
        batch_size: Default windows per forward pass (4 on CUDA, 1 on CPU when not given).

    Examples:
        >>> critic = DecoderCritic.from_pretrained(
        ...     "Tongyi-Zhiwen/QwenLong-CPRS-7B", device="cuda", dtype=torch.bfloat16
        ... )  # doctest: +SKIP
        >>> layout = critic.prompt_layout("Extract sentences.", "Who?", 512)  # doctest: +SKIP
        >>> probs = critic.score_windows(layout, [window_ids])  # doctest: +SKIP
    """

    kind = "decoder"

    def __init__(self, model: Qwen2CriticModel, tokenizer: Any, name_or_path: str = "", batch_size: int | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name_or_path = name_or_path
        self.max_sequence_tokens = min(int(model.config.max_position_embeddings), MAX_SEQUENCE_CAP)
        self.default_window_tokens = min(DEFAULT_WINDOW_TOKENS, self.max_sequence_tokens)
        self._batch_size = batch_size
        on_gpu = any(p.device.type == "cuda" for p in model.parameters())
        self.default_batch_size = batch_size or (4 if on_gpu else 1)
        self._im_start = _special_id(tokenizer, "<|im_start|>")
        self._im_end = _special_id(tokenizer, "<|im_end|>")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._pad = int(pad) if pad is not None else 0

    @property
    def device(self) -> str:
        device_map = getattr(self.model, "hf_device_map", None) or {}
        if len({str(d) for d in device_map.values()}) > 1:
            return "auto"
        return str(next(self.model.parameters()).device)

    @property
    def bidirectional_from(self) -> int:
        """Index of the first bidirectional layer."""
        return self.model.bidirectional_from

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str | None = None,
        dtype: Any = None,
        revision: str | None = None,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        batch_size: int | None = None,
        bidirectional_from: int | None = None,
        device_map: str | dict[str, Any] | None = None,
        attn_implementation: str = "sdpa",
    ) -> DecoderCritic:
        """Load a QwenLong-CPRS critic (safetensors only) from a local folder or a hub id.

        The checkpoint's tensor names and shapes are checked against ``config.json`` before anything is allocated
        (see :mod:`cprs_integrations.models.checkpoint`): a config describing a 48-layer model next to weights
        that hold only the head fails in milliseconds.

        Args:
            path: Folder or hub id.
            device: Where to put the weights; ``None`` picks cuda > mps > cpu, or leaves placement to
                ``device_map`` when one is given. An explicit device must exist.
            dtype: A ``torch.dtype`` (``None``: transformers' default).
            revision: Hub revision.
            local_files_only: Never touch the network.
            trust_remote_code: Passed through to transformers.
            batch_size: Default windows per forward pass.
            bidirectional_from: First bidirectional layer (overrides ``config.json``).
            device_map: A transformers/accelerate device map (e.g. ``"auto"``) for a critic larger than
                one GPU; the weights then stay where accelerate puts them. Exclusive with ``device``.
            attn_implementation: ``"sdpa"`` or ``"eager"``.

        Raises:
            FileNotFoundError: a path that is no folder.
            ValueError: not a CPRS critic (no ``cls_head``), weights that do not match the config (missing layers,
                other shapes), missing or broken tokenizer files, bad ``bidirectional_from``, unavailable device,
                both ``device`` and ``device_map``, unsupported attention backend.
        """
        attn_implementation = check_attention_implementation(attn_implementation)
        if device_map is not None and device is not None:
            raise ValueError("pass either device or device_map, not both")
        target = None if device_map is not None else resolve_device(device)
        location = CheckpointLocation.of(path, revision=revision, local_files_only=local_files_only)
        where = location.where
        config = read_config(location, trust_remote_code=trust_remote_code)
        if getattr(config, "model_type", None) != "qwen2":
            raise ValueError(
                f"{where} is not a CPRS decoder critic: expected model_type 'qwen2', found {config.model_type!r}"
            )
        if not isinstance(config, Qwen2Config):  # a remote-code config class: keep its values, not its code
            config = Qwen2Config.from_dict(config.to_dict())
        setattr(config, CONFIG_KEY, resolve_bidirectional_from(config, bidirectional_from))
        config = official_rope(config, where)
        if getattr(config, "use_sliding_window", False):
            raise ValueError(f"{where}: sliding-window attention is not supported by the decoder critic")
        check_weights(location, lambda: Qwen2CriticModel(config))
        tokenizer = load_tokenizer(location, vocab_size=int(config.vocab_size), trust_remote_code=trust_remote_code)
        with no_progress_bars():
            model, info = Qwen2CriticModel.from_pretrained(
                where,
                config=config,
                dtype=dtype,
                # A single accelerator is filled straight from the files (no full copy in host memory first).
                device_map=device_map if target is None or target == "cpu" else {"": target},
                use_safetensors=True,
                attn_implementation=attn_implementation,
                output_loading_info=True,
                trust_remote_code=trust_remote_code,
                **location.hub_options(),
            )
        check_loading_info(where, model, info)
        if target is not None:
            model = model.to(target)
        return cls(model, tokenizer, name_or_path=where, batch_size=batch_size)

    def replicate(self, device: str) -> DecoderCritic:
        """A copy on ``device`` (one replica per GPU); not for a critic spread by a device map."""
        if self.device == "auto":
            raise ValueError("a critic loaded with a device_map spanning devices cannot be replicated")
        target = resolve_device(device)
        clone = copy.copy(self)
        clone.model = copy.deepcopy(self.model).to(target)
        clone.default_batch_size = self._batch_size or (4 if target.startswith("cuda") else 1)
        return clone

    def prompt_layout(self, instruction: str, query: str, max_prefix_tokens: int) -> PromptLayout:
        """The official prefix, tokenized as the official server does: the whole string at once.

        ``<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n{query}<|im_end|>\n<|im_start|>context\n``
        is encoded as one string (so an instruction or query starting with a newline gives the official ids).
        Only when that is longer than ``max_prefix_tokens`` are the query (then the instruction) cut, role by role,
        with a warning (once per process).
        """
        encode = raw_backend(self.tokenizer).encode

        def ids(text: str) -> list[int]:
            return encode(text, add_special_tokens=False).ids

        whole = ids(_official_prefix(instruction, query))
        if len(whole) <= max_prefix_tokens:
            return PromptLayout(head=tuple(whole), tail=())
        fixed = len(ids(_official_prefix("", "")))
        if max_prefix_tokens < fixed:
            raise ValueError(
                f"max_prefix_tokens={max_prefix_tokens} is below the {fixed} fixed tokens of the decoder "
                "critic's prompt"
            )
        warn_long_prefix(len(whole), max_prefix_tokens)
        query_ids, instruction_ids = truncate_prefix(ids(query), ids(instruction), max_prefix_tokens - fixed)
        start, end, newline = self._im_start, self._im_end, ids("\n")
        head = (
            *(start, *ids("system\n"), *instruction_ids, end, *newline),
            *(start, *ids("user\n"), *query_ids, end, *newline),
            *(start, *ids("context\n")),
        )
        return PromptLayout(head=head, tail=())

    def score_windows(
        self, layout: PromptLayout | Sequence[PromptLayout], windows: list[np.ndarray]
    ) -> list[np.ndarray]:
        if not windows:
            return []
        layouts = layouts_for(layout, len(windows))
        sequences = [[*lay.head, *np.asarray(w).tolist(), *lay.tail] for lay, w in zip(layouts, windows)]
        longest = max(len(s) for s in sequences)
        if longest > self.max_sequence_tokens:
            raise ValueError(
                f"a window with its prompt has {longest} tokens, more than this critic's "
                f"max_sequence_tokens={self.max_sequence_tokens}"
            )
        ids, mask = pad_batch(sequences, self._pad)
        device = self.model.model.embed_tokens.weight.device
        starts = [len(lay.head) for lay in layouts]
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))
            first, last = min(starts), max(s + len(w) for s, w in zip(starts, windows))
            probs = logits[:, first:last].float().softmax(dim=-1).cpu().numpy()
        return [
            np.ascontiguousarray(probs[row, start - first : start - first + len(w)])
            for row, (start, w) in enumerate(zip(starts, windows))
        ]


def _official_prefix(instruction: str, query: str) -> str:
    return f"<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n{query}<|im_end|>\n<|im_start|>context\n"


def official_rope(config: Qwen2Config, where: str) -> Qwen2Config:
    """Default rotary positions, as the official stack computed them.

    The released critic was trained and served with transformers 4.44, whose Qwen2 rotary embedding ignores any
    ``rope_scaling`` entry of ``config.json``; transformers 5.x applies it (``config.rope_parameters``). So that
    positions match the trained model, a scaling entry is dropped (``rope_theta`` is kept), with a log line.
    """
    parameters = dict(getattr(config, "rope_parameters", None) or {})
    if parameters.get("rope_type", "default") != "default":
        logger.info(
            "cprs: %s declares rope scaling %r; using default rotary positions, as the official QwenLong-CPRS "
            "stack (transformers 4.44) did",
            where,
            parameters.get("rope_type"),
        )
        config.rope_parameters = {"rope_theta": parameters.get("rope_theta", 10000.0), "rope_type": "default"}
    return config


def _special_id(tokenizer: Any, token: str) -> int:
    value = tokenizer.convert_tokens_to_ids(token)
    if value is None or value == tokenizer.unk_token_id:
        raise ValueError(f"decoder critic tokenizer {type(tokenizer).__name__} has no {token} token (a Qwen tokenizer)")
    return int(value)
