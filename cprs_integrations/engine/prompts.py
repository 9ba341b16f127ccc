"""Instruction templates per granularity, after the QwenLong-CPRS paper (English and Chinese).

The instruction tells the critic *what* to keep and at which granularity; ``instruction=`` on
:meth:`CPRSEngine.compress` replaces it with free text.

Example:
    >>> instruction_for("sentence")
    "Extract some sentences from the documents as the supporting facts for answering the user's question."
"""

from __future__ import annotations

from cprs_integrations.engine.options import GRANULARITIES, LANGUAGES, Granularity

__all__ = ["GRANULARITIES", "INSTRUCTIONS", "LANGUAGES", "Granularity", "check_granularity", "instruction_for"]

# The first template of each list is the canonical one used at inference; the others are paraphrases used in
# training so that the critic follows the meaning of an instruction rather than its exact words.
INSTRUCTIONS: dict[str, dict[str, list[str]]] = {
    "en": {
        "token": [
            "Extract the keywords according to the user's query.",
            "Pick out the key words and short phrases that answer the user's question.",
            "Keep only the exact words in the documents that the user's question asks for.",
        ],
        "sentence": [
            "Extract some sentences from the documents as the supporting facts for answering the user's question.",
            "Find the sentences in the text that are needed to answer the question.",
            "Select the supporting sentences for the user's query and drop everything else.",
        ],
        "paragraph": [
            "Retrieve chunks or paragraphs from the document that are related to the user's query.",
            "Keep the whole paragraphs that are relevant to the question.",
            "Find the passages of the document that the user's question is about.",
        ],
        "chunk": [
            "Retrieve chunks or paragraphs from the document that are related to the user's query.",
            "Keep the chunks of text that are relevant to the question.",
        ],
    },
    "zh": {
        "token": ["根据用户的问题，提取文档中的关键词。"],
        "sentence": ["从文档中抽取一些句子，作为回答用户问题的支撑事实。"],
        "paragraph": ["从文档中检索与用户问题相关的段落或文本块。"],
        "chunk": ["从文档中检索与用户问题相关的段落或文本块。"],
    },
}


def check_granularity(granularity: object) -> str:
    """Return ``granularity`` if it is known, else raise a ``ValueError`` listing the choices."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; expected one of {', '.join(map(repr, GRANULARITIES))}")
    return str(granularity)


def instruction_for(granularity: str, language: str = "en") -> str:
    """The canonical instruction for a granularity and language.

    Args:
        granularity: One of ``token``, ``sentence``, ``paragraph``, ``chunk``.
        language: ``en`` or ``zh``.

    Raises:
        ValueError: for an unknown granularity or language.
    """
    check_granularity(granularity)
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; expected one of {', '.join(map(repr, LANGUAGES))}")
    return INSTRUCTIONS[language][granularity][0]
