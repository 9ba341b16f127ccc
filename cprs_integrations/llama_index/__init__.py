"""LlamaIndex adapters of the CPRS engine: a node postprocessor, a retriever without an index, an agent memory block.

Importing this package needs ``llama-index-core`` but not torch: the critic loads on first use, through
:meth:`CPRSEngine.shared` (one loaded critic per process) unless an ``engine=`` is given.

Examples:
    >>> from cprs_integrations.llama_index import CPRSNodePostprocessor
    >>> query_engine = index.as_query_engine(  # doctest: +SKIP
    ...     node_postprocessors=[CPRSNodePostprocessor(target_ratio=0.2)]
    ... )
"""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401
except ImportError as e:
    raise ImportError(
        'cprs_integrations.llama_index needs llama-index-core: pip install "cprs-integrations[llama-index]"'
    ) from e

from cprs_integrations.llama_index.memory import CPRSMemoryBlock
from cprs_integrations.llama_index.postprocessor import CPRSNodePostprocessor
from cprs_integrations.llama_index.retriever import CPRSRetriever

__all__ = ["CPRSMemoryBlock", "CPRSNodePostprocessor", "CPRSRetriever"]
