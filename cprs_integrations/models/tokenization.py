"""Tokenizer helpers shared by the critics and the engine."""

from __future__ import annotations

import threading
import weakref
from typing import Any

_raw_backends: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_raw_backends_lock = threading.Lock()


def raw_backend(tokenizer: Any) -> Any:
    """The tokenizer's Rust backend with truncation and padding switched off (cached per tokenizer).

    Some shipped ``tokenizer.json`` files (all-MiniLM-L6-v2's among them) enable truncation at 128 tokens and
    padding in the backend itself; used as is, long texts would be silently cut.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(f"the critic needs a fast (Rust) tokenizer with offsets; got {type(tokenizer).__name__}")
    with _raw_backends_lock:
        raw = _raw_backends.get(tokenizer)
        if raw is None:
            from tokenizers import Tokenizer

            raw = Tokenizer.from_str(backend.to_str())
            raw.no_truncation()
            raw.no_padding()
            _raw_backends[tokenizer] = raw
        return raw
