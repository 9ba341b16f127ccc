"""The static embedding model of the coarse filter: model2vec, distilled from all-MiniLM-L6-v2, shipped in the wheel.

A static model embeds a text as the mean of per-token vectors (no attention), so it embeds millions of characters a
second on one CPU core: cheap enough to rank every sentence of a 1M-token input before the critic reads any of it.
How it was made and its licence: ``models/static/README.md``; ``scripts/distill_static.py`` remakes it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

#: The shipped model (model2vec format: ``model.safetensors``, ``tokenizer.json``, ``config.json``).
STATIC_MODEL_DIR = Path(__file__).parent / "static"


class StaticEmbedder:
    """``texts -> (n, d)`` float32 L2-normalised embeddings with a model2vec ``StaticModel``; thread-safe.

    Args:
        path: A model2vec folder (default: the shipped model).

    Raises:
        FileNotFoundError: the folder does not exist or lacks ``model.safetensors``.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None):
        from model2vec import StaticModel

        folder = Path(STATIC_MODEL_DIR if path is None else path)
        if not (folder / "model.safetensors").is_file():
            raise FileNotFoundError(f"{folder} is not a model2vec folder (no model.safetensors)")
        self.path = folder
        self._model: Any = StaticModel.from_pretrained(str(folder), normalize=True, force_download=False)

    def __call__(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        vectors = self._model.encode(texts, batch_size=1024, show_progress_bar=False, use_multiprocessing=False)
        return np.asarray(vectors, dtype=np.float32)

    @property
    def dimensions(self) -> int:
        return int(self._model.dim)


_default: StaticEmbedder | None = None
_lock = threading.Lock()


def default_embedder() -> StaticEmbedder:
    """The shipped static model, loaded once per process."""
    global _default
    with _lock:
        if _default is None:
            _default = StaticEmbedder()
        return _default
