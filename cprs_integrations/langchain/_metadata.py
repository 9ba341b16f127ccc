"""Metadata of the documents the LangChain adapters return: copied safely, our figures in one namespaced key.

Rules (one place for the compressor and the retriever):

* The caller's metadata is copied key by key with ``copy.deepcopy``; a value that cannot be deep-copied (a lock,
  a generator, a client) is kept by reference, so nothing is lost and nothing fails after the scoring work.
* Our figures go under ``metadata["cprs"]``. A ``"cprs"`` key that the caller set for something else (not a figure
  dict from this package) is an error raised before scoring, naming the document; figures from an earlier CPRS step
  (a chained compressor) are replaced.
* ``metadata["relevance_score"]`` holds the critic's score, where generic LangChain code (and the Cohere, Voyage and
  FlashRank rerankers) put theirs; with ``keep_retrieval_score=True`` an upstream ``relevance_score`` is kept.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from langchain_core.documents import Document

#: The metadata key under which the compressor and the retriever put their figures.
METADATA_KEY = "cprs"
#: Where rerankers put a document's score.
RELEVANCE_KEY = "relevance_score"
#: Every figure dict of this package carries this marker, so that a chained step can tell ours from the caller's.
_MARKER = "cprs_version"


def check_metadata(documents: Sequence[Document]) -> None:
    """Refuse, before any scoring, documents whose ``metadata["cprs"]`` is the caller's own.

    Raises:
        ValueError: naming ``documents[i]``.
    """
    for i, doc in enumerate(documents):
        value = doc.metadata.get(METADATA_KEY) if isinstance(doc.metadata, dict) else None
        if value is not None and not (isinstance(value, dict) and _MARKER in value):
            raise ValueError(
                f"documents[{i}].metadata[{METADATA_KEY!r}] is already set ({type(value).__name__}) and is not a "
                "CPRS figure dict; the compressor writes its figures there: rename that key"
            )


def copied_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """A new dict: each value deep-copied, or kept by reference when it cannot be deep-copied."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        try:
            out[key] = copy.deepcopy(value)
        except Exception:  # locks, generators, clients: keep the object itself rather than lose it
            out[key] = value
    return out


def with_figures(
    metadata: dict[str, Any], figures: dict[str, Any], score: float, keep_retrieval_score: bool
) -> dict[str, Any]:
    """``metadata`` (copied) with our ``figures`` and the ``relevance_score``."""
    from cprs_integrations import __version__

    out = copied_metadata(metadata)
    out[METADATA_KEY] = {**figures, _MARKER: __version__}
    if not (keep_retrieval_score and RELEVANCE_KEY in metadata):
        out[RELEVANCE_KEY] = score
    return out
