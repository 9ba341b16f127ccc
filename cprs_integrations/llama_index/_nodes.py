"""Reading and rewriting the text of LlamaIndex nodes without touching the caller's objects."""

from __future__ import annotations

import copy
from typing import Any

from llama_index.core.schema import BaseNode, ImageNode, Node, NodeRelationship, TextNode

from cprs_integrations.engine.result import KeptSpan

#: Metadata key of our figures; excluded from what the LLM and the embedding model see.
METADATA_KEY = "cprs"


def text_of(node: BaseNode) -> str | None:
    """The plain text of a node, or ``None`` for nodes whose payload is not only text (images, audio, video)."""
    if isinstance(node, ImageNode):
        return None
    if isinstance(node, TextNode):
        return node.text
    if isinstance(node, Node):
        if node.image_resource or node.audio_resource or node.video_resource or node.text_resource is None:
            return None
        return node.text_resource.text or ""
    return None


def with_text(node: BaseNode, text: str, figures: dict[str, Any]) -> BaseNode:
    """A deep copy of ``node`` holding ``text`` and ``figures`` under ``metadata["cprs"]`` (hidden from prompts)."""
    new = node.model_copy(deep=True)
    if isinstance(new, TextNode):
        new.text = text
    elif isinstance(new, Node) and new.text_resource is not None:
        new.text_resource = new.text_resource.model_copy(update={"text": text})
    else:
        raise TypeError(f"cannot set the text of a {type(node).__name__}; expected a TextNode or a text Node")
    new.metadata[METADATA_KEY] = figures
    _exclude_figures(new)
    return new


def span_node(source: BaseNode, source_text: str, span: KeptSpan) -> TextNode:
    """A new ``TextNode`` holding ``source_text[span.start:span.end]``, linked to ``source`` as its SOURCE.

    ``metadata["cprs"]["start"/"end"]`` are offsets in the source node's text; ``start_char_idx`` /
    ``end_char_idx`` are offsets in the document, as LlamaIndex means them: shifted by the source node's own
    ``start_char_idx`` when it is a chunk of a larger document.
    """
    shift = source.start_char_idx if isinstance(getattr(source, "start_char_idx", None), int) else 0
    metadata = copy.deepcopy(source.metadata)
    metadata[METADATA_KEY] = {
        "source_node_id": source.node_id,
        "start": span.start,
        "end": span.end,
        "score": span.score,
    }
    node = TextNode(
        id_=f"{source.node_id}:cprs:{span.start}-{span.end}",
        text=span.slice_of(source_text),
        metadata=metadata,
        excluded_llm_metadata_keys=list(source.excluded_llm_metadata_keys),
        excluded_embed_metadata_keys=list(source.excluded_embed_metadata_keys),
        relationships={NodeRelationship.SOURCE: source.as_related_node_info().model_copy(deep=True)},
        start_char_idx=shift + span.start,
        end_char_idx=shift + span.end,
        metadata_template=source.metadata_template,
        metadata_separator=source.metadata_separator,
    )
    _exclude_figures(node)
    return node


def _exclude_figures(node: BaseNode) -> None:
    if METADATA_KEY not in node.excluded_llm_metadata_keys:
        node.excluded_llm_metadata_keys = [*node.excluded_llm_metadata_keys, METADATA_KEY]
    if METADATA_KEY not in node.excluded_embed_metadata_keys:
        node.excluded_embed_metadata_keys = [*node.excluded_embed_metadata_keys, METADATA_KEY]
