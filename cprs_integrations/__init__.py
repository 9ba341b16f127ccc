"""cprs-integrations: query-guided context compression (QwenLong-CPRS) for LangChain and LlamaIndex.

Importing the package (or an adapter) does not import torch; the critic loads on first use.

Examples:
    >>> from cprs_integrations import CPRSEngine
    >>> engine = CPRSEngine.from_pretrained()  # doctest: +SKIP
    >>> [res] = engine.compress("What is the capital?", [long_text], target_ratio=0.1)  # doctest: +SKIP
    >>> from cprs_integrations import RemoteCPRSEngine  # the same engine API, served by ``cprs serve``
    >>> remote = RemoteCPRSEngine("http://127.0.0.1:8000")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CPRSEngine",
    "CompressionOptions",
    "CompressionResult",
    "Compressor",
    "KeptSpan",
    "RemoteCPRSEngine",
    "TokenScores",
    "__version__",
    "instruction_for",
]

_LAZY = {
    "CPRSEngine": "cprs_integrations.engine.engine",
    "TokenScores": "cprs_integrations.engine.result",
    "CompressionOptions": "cprs_integrations.engine.options",
    "CompressionResult": "cprs_integrations.engine.result",
    "KeptSpan": "cprs_integrations.engine.result",
    "instruction_for": "cprs_integrations.engine.prompts",
    "Compressor": "cprs_integrations.protocol",
    "RemoteCPRSEngine": "cprs_integrations.api.client",
}

if TYPE_CHECKING:
    from cprs_integrations.api.client import RemoteCPRSEngine
    from cprs_integrations.engine.engine import CPRSEngine
    from cprs_integrations.engine.options import CompressionOptions
    from cprs_integrations.engine.prompts import instruction_for
    from cprs_integrations.engine.result import CompressionResult, KeptSpan, TokenScores
    from cprs_integrations.protocol import Compressor


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cprs_integrations' has no attribute {name!r}")
