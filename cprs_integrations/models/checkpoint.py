"""Check a critic folder (or hub repository) against its ``config.json`` before anything is allocated.

Shared by the encoder and the decoder critic, so both refuse the same broken checkpoints with the same messages:

* the path: a string that looks like a path but is no folder is a ``FileNotFoundError``, not a hub lookup;
* the weights: safetensors headers (names and shapes, never the data) and the sharding index are compared with the
  tensors of the model built from the config on the ``meta`` device (no memory, no random initialisation), so a
  missing head, missing layers, a config deeper than its weights or a wrong hidden size is reported before
  transformers would allocate and randomly fill the gaps. Only safetensors are read: a pickle checkpoint
  (``pytorch_model.bin``) is never loaded;
* the tokenizer: its files must exist and parse, and once loaded it must know more than ``[UNK]`` and fit the
  model's embedding table.

Every error names the folder and what is missing or wrong.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cprs_integrations.models.progress import no_progress_bars

SAFETENSORS_SINGLE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
#: Tokenizer files transformers can build a tokenizer from without ``tokenizer.json``.
TOKENIZER_VOCAB_FILES: tuple[tuple[str, ...], ...] = (
    ("vocab.txt",),
    ("vocab.json", "merges.txt"),
    ("tokenizer.model",),
    ("spiece.model",),
    ("sentencepiece.bpe.model",),
)
#: Old LayerNorm parameter names that transformers still renames on load.
_LEGACY_NAMES = ((".gamma", ".weight"), (".beta", ".bias"))
#: ``encoder.layer.3.`` (BERT family), ``model.layers.3.`` (Qwen2 and most decoders).
_LAYER_INDEX = re.compile(r"\.layers?\.(\d+)\.")
#: Words any real vocabulary knows; a tokenizer that turns all of them into ``[UNK]`` has no vocabulary.
_PROBE_TEXT = "The quick brown fox jumps over the lazy dog."
_MAX_EXAMPLES = 4

Shapes = dict[str, tuple[int, ...]]


def looks_like_path(where: str) -> bool:
    """True for strings that can only be a filesystem path, not a hub id ``name`` or ``org/name``.

    A path starts with ``.``, ``~`` or a root, contains a backslash (Windows separator), or has more than one
    ``/``. ``models/critic`` stays ambiguous: it is tried as a folder, then as a hub id, and an error says both.

    Examples:
        >>> looks_like_path("./critic"), looks_like_path("org/name"), looks_like_path("a/b/c")
        (True, False, True)
    """
    return (
        where.startswith((".", "~"))
        or os.path.isabs(where)
        or "\\" in where
        or (os.altsep is not None and os.altsep in where)
        or where.count("/") > 1
    )


@dataclass(frozen=True)
class CheckpointLocation:
    """A local folder or a hub repository, with the hub options used to read its files.

    Attributes:
        where: The folder or hub id as given (``~`` expanded).
        revision: Hub revision (branch, tag or commit).
        local_files_only: Never touch the network.
    """

    where: str
    revision: str | None = None
    local_files_only: bool = False

    @classmethod
    def of(
        cls, model: str | os.PathLike[str], *, revision: str | None = None, local_files_only: bool = False
    ) -> CheckpointLocation:
        """The location of ``model``.

        Raises:
            FileNotFoundError: ``model`` looks like a path (see :func:`looks_like_path`) but is no folder.
        """
        where = os.path.expanduser(os.fspath(model))
        if looks_like_path(where) and not Path(where).exists():
            raise FileNotFoundError(
                f"no such folder: {where!r} does not exist (relative paths start from {Path.cwd()})"
            )
        if Path(where).is_file():
            raise FileNotFoundError(f"{where!r} is a file; pass the critic's folder (the one holding config.json)")
        return cls(where, revision, local_files_only)

    @property
    def is_local(self) -> bool:
        return Path(self.where).is_dir()

    def hub_options(self) -> dict[str, Any]:
        return {"revision": self.revision, "local_files_only": self.local_files_only}

    def locate(self, filename: str) -> str | None:
        """Local path of ``filename`` in the folder (or the hub cache, downloading it); ``None`` if it has none."""
        if self.is_local:
            candidate = Path(self.where) / filename
            return str(candidate) if candidate.is_file() else None
        from transformers.utils import cached_file

        return cached_file(self.where, filename, **self.hub_options(), _raise_exceptions_for_missing_entries=False)


def read_config(location: CheckpointLocation, *, trust_remote_code: bool = False) -> Any:
    """The transformers config of ``location``.

    Raises:
        FileNotFoundError: a name like ``models/critic`` that is neither a folder here nor a loadable hub repository.
        ValueError: a folder or repository whose ``config.json`` is missing or unreadable (not a CPRS critic).
    """
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(location.where, **location.hub_options(), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, StrictDataclassError) as e:  # the last: values that contradict each other
        if isinstance(e, OSError) and not location.is_local:  # neither a folder nor a repository that answered
            raise FileNotFoundError(
                f"no such folder: {location.where!r} does not exist (relative paths start from {Path.cwd()}), "
                f"and it could not be loaded as a hub id either: {e}"
            ) from e
        raise ValueError(f"{location.where} is not a CPRS critic: its config.json is missing or invalid ({e})") from e


# ------------------------------------------------------------------------------------------------------ weights


def checkpoint_shapes(location: CheckpointLocation) -> Shapes:
    """Name -> shape of every tensor in the safetensors checkpoint, from file headers only (no tensor is read).

    Raises:
        ValueError: no safetensors (a pickle ``pytorch_model.bin`` is named, never loaded), an unreadable file,
            an index naming a missing shard or tensors its shards do not hold.
    """
    where = location.where
    index_file = location.locate(SAFETENSORS_INDEX)
    if index_file is None:
        single = location.locate(SAFETENSORS_SINGLE)
        if single is None:
            pickles = [name for name in PICKLE_WEIGHTS if location.is_local and location.locate(name)]
            hint = f"; {pickles[0]} is a pickle file, never loaded: convert it to safetensors" if pickles else ""
            raise ValueError(
                f"{where} is not a CPRS critic: it has no {SAFETENSORS_SINGLE} nor {SAFETENSORS_INDEX}{hint}"
            )
        return _header_shapes(single, where)
    weight_map = _read_json(index_file, where).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{where}: {SAFETENSORS_INDEX} has no weight_map naming the tensors and their shards")
    shapes: Shapes = {}
    for shard in sorted(set(weight_map.values())):
        shard_file = location.locate(shard)
        if shard_file is None:
            raise ValueError(f"{where}: {SAFETENSORS_INDEX} names the shard {shard!r}, which is missing")
        shapes.update(_header_shapes(shard_file, where))
    unlisted = sorted(set(weight_map) - set(shapes))
    if unlisted:
        raise ValueError(
            f"{where}: {SAFETENSORS_INDEX} lists {len(unlisted)} tensor(s) that its shards do not hold, "
            f"e.g. {unlisted[:_MAX_EXAMPLES]}"
        )
    return shapes


def check_weights(location: CheckpointLocation, build: Callable[[], Any]) -> None:
    """Compare the checkpoint of ``location`` with the model ``build()`` makes from its config, before loading.

    ``build`` runs on the ``meta`` device: a 48-layer config costs no memory and a few milliseconds. Names are
    matched as transformers matches them on load (with or without the base-model prefix, legacy ``gamma``/``beta``).
    Tensors the model does not have (an unused ``lm_head``, a pooler) are ignored, except layers beyond the
    config's depth.

    Args:
        location: The folder or hub repository.
        build: Builds the model from the config, e.g. ``lambda: Qwen2CriticModel(config)``.

    Raises:
        ValueError: no safetensors; missing head (``"not a CPRS critic"``); config and weights of different depth;
            missing tensors; shapes that differ from the config's.
    """
    import torch

    found = checkpoint_shapes(location)
    with torch.device("meta"):
        model = build()
    tied_targets = set(getattr(model, "all_tied_weights_keys", None) or {})
    expected = {name: tuple(p.shape) for name, p in model.named_parameters() if name not in tied_targets}
    prefix = f"{model.base_model_prefix}." if model.base_model_prefix else ""
    problems, head_missing = weight_problems(expected, _as_model_names(found, expected, prefix), prefix)
    if problems:
        lead = "is not a CPRS critic" if head_missing else "does not match its config.json"
        raise ValueError(f"{location.where} {lead}: " + "; ".join(problems))


def weight_problems(expected: Shapes, found: Shapes, prefix: str) -> tuple[list[str], bool]:
    """What is wrong with ``found`` (checkpoint names and shapes) for a model with ``expected`` parameters.

    Args:
        expected: Parameter name -> shape of the model the config describes.
        found: Tensor name -> shape in the checkpoint, already in the model's names.
        prefix: The backbone prefix (``"bert."``, ``"model."``); parameters outside it form the head.

    Returns:
        ``(problems, head_missing)``: one sentence per problem (empty if none), and whether the head is absent.
    """
    problems: list[str] = []
    missing = sorted(set(expected) - set(found))
    head = [name for name in missing if prefix and not name.startswith(prefix)]
    if head:
        shapes = ", ".join(f"{name} {list(expected[name])}" for name in head)
        problems.append(f"its weights have no token-classification head ({shapes})")
    expected_depth, found_depth = _depth(expected), _depth(found)
    if expected_depth != found_depth and (expected_depth or found_depth):
        problems.append(
            f"config.json describes {expected_depth} layers but the weights hold {found_depth}; "
            "the weights and the config do not belong together"
        )
    else:
        body = [name for name in missing if name not in head]
        if body:
            problems.append(
                f"the weights lack {len(body)} tensor(s) that config.json implies, e.g. {body[:_MAX_EXAMPLES]}"
            )
    mismatched = [name for name in sorted(set(expected) & set(found)) if expected[name] != found[name]]
    if mismatched:
        examples = ", ".join(
            f"{name}: {list(found[name])} in the weights, {list(expected[name])} from config.json"
            for name in mismatched[:_MAX_EXAMPLES]
        )
        problems.append(f"{len(mismatched)} tensor(s) have other shapes than config.json implies ({examples})")
    return problems, bool(head)


def check_loading_info(where: str, model: Any, info: dict[str, Any]) -> None:
    """After ``from_pretrained(..., output_loading_info=True)``: refuse randomly initialised or resized weights.

    A second line behind :func:`check_weights`, for renamings only transformers knows.

    Raises:
        ValueError: missing (``"not a CPRS critic"`` when the head is among them) or mismatched weights.
    """
    missing = sorted(info.get("missing_keys") or [])
    mismatched = sorted(str(item[0] if isinstance(item, tuple) else item) for item in info.get("mismatched_keys") or [])
    if not missing and not mismatched:
        return
    prefix = f"{model.base_model_prefix}." if model.base_model_prefix else ""
    head_missing = any(prefix and not name.startswith(prefix) for name in missing)
    lead = "is not a CPRS critic" if head_missing else "does not match its config.json"
    parts = []
    if missing:
        parts.append(f"{len(missing)} weight(s) were missing and would be random, e.g. {missing[:_MAX_EXAMPLES]}")
    if mismatched:
        parts.append(f"{len(mismatched)} weight(s) have other shapes, e.g. {mismatched[:_MAX_EXAMPLES]}")
    raise ValueError(f"{where} {lead}: " + "; ".join(parts))


# ---------------------------------------------------------------------------------------------------- tokenizer


def check_tokenizer_files(location: CheckpointLocation) -> None:
    """The folder must hold a ``tokenizer.json`` that starts as JSON, or vocabulary files.

    Without them transformers builds a tokenizer of a handful of special tokens that maps every word to
    ``[UNK]``. Only the first bytes of ``tokenizer.json`` are read here; :func:`load_tokenizer` reports a file
    that is broken further on.

    Raises:
        ValueError: no tokenizer files, or a ``tokenizer.json`` that is empty or not JSON.
    """
    where = location.where
    tokenizer_json = location.locate("tokenizer.json")
    if tokenizer_json is not None:
        with open(tokenizer_json, "rb") as f:
            start = f.read(64).lstrip()
        if not start:
            raise ValueError(f"{where}: tokenizer.json is empty")
        if not start.startswith(b"{"):
            raise ValueError(f"{where}: tokenizer.json is not a JSON object (it starts with {start[:16]!r})")
        return
    if not location.is_local:
        return  # a hub repository: transformers reports a missing vocabulary itself (no lookup per file name)
    if not any(all(location.locate(name) for name in files) for files in TOKENIZER_VOCAB_FILES):
        choices = ", ".join(" + ".join(files) for files in (("tokenizer.json",), *TOKENIZER_VOCAB_FILES))
        raise ValueError(f"{where} has no tokenizer files: expected one of {choices} next to config.json")


def load_tokenizer(location: CheckpointLocation, *, vocab_size: int, trust_remote_code: bool = False) -> Any:
    """Load the tokenizer of ``location`` after :func:`check_tokenizer_files`, then check what was loaded.

    Args:
        location: The folder or hub repository.
        vocab_size: Rows of the model's embedding table (``config.vocab_size``).
        trust_remote_code: Passed to transformers.

    Raises:
        ValueError: missing or unreadable tokenizer files, a tokenizer that maps every word to ``[UNK]`` (or to
            nothing), or one with more entries than the embedding table.
    """
    from transformers import AutoTokenizer

    where = location.where
    check_tokenizer_files(location)
    try:
        with no_progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(
                where, **location.hub_options(), trust_remote_code=trust_remote_code
            )
    except Exception as e:  # tokenizers raises bare Exceptions for malformed files; keep the cause chained
        raise ValueError(f"{where}: its tokenizer files could not be read ({type(e).__name__}: {e})") from e
    size = len(tokenizer)
    ids = tokenizer.encode(_PROBE_TEXT, add_special_tokens=False)
    if not ids or all(i == tokenizer.unk_token_id for i in ids):
        raise ValueError(
            f"{where}: its tokenizer ({type(tokenizer).__name__}, {size} entries) maps every word to "
            f"{tokenizer.unk_token or 'nothing'}; its vocabulary files are missing or empty"
        )
    if size > vocab_size:
        raise ValueError(
            f"{where}: its tokenizer has {size} entries but config.json's vocab_size is {vocab_size}; "
            "the tokenizer belongs to another model"
        )
    return tokenizer


# ------------------------------------------------------------------------------------------------------ helpers


def _header_shapes(file: str, where: str) -> Shapes:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(file, framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118 (no __iter__)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{where}: {Path(file).name} is not a readable safetensors file ({e})") from e


def _read_json(file: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{where}: {Path(file).name} is empty or not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{where}: {Path(file).name} holds a JSON {type(data).__name__}, not an object")
    return data


def _as_model_names(found: Shapes, expected: Shapes, prefix: str) -> Shapes:
    """Checkpoint names as the model names them: base-model prefix added or dropped, legacy LayerNorm names."""
    renamed: Shapes = {}
    for name, shape in found.items():
        spellings = [name] + [name[: -len(old)] + new for old, new in _LEGACY_NAMES if name.endswith(old)]
        if prefix:
            spellings += [variant for s in spellings for variant in (prefix + s, s.removeprefix(prefix))]
        renamed[next((s for s in spellings if s in expected), name)] = shape
    return renamed


def _depth(names: Shapes) -> int:
    """Number of numbered layers among ``names`` (highest index + 1; 0 when there are none)."""
    indices = [int(m.group(1)) for name in names if (m := _LAYER_INDEX.search(name))]
    return max(indices) + 1 if indices else 0
