"""Instruction templates per granularity, after the QwenLong-CPRS paper (English and Chinese).

The instruction tells the critic *what* to keep and at which granularity; ``instruction=`` on
:meth:`CPRSEngine.compress` replaces it with free text.

Examples:
    >>> instruction_for("sentence")
    "Extract some sentences from the documents as the supporting facts for answering the user's question."
"""

from __future__ import annotations

from cprs_integrations.engine.options import GRANULARITIES, LANGUAGES, Granularity

__all__ = [
    "DECODER_INSTRUCTIONS",
    "GRANULARITIES",
    "INSTRUCTIONS",
    "LANGUAGES",
    "Granularity",
    "check_granularity",
    "hop_query",
    "instruction_for",
]

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


#: Instructions for decoder critics of the released QwenLong-CPRS layout (the 7B), closest to what it was trained
#: and served with. One table, with the source of each:
#:
#: ============  ===================================================================  =============================
#: granularity   instruction                                                          source
#: ============  ===================================================================  =============================
#: sentence      "You are an expert for information extraction, ... supporting        official README, "for qa
#:               facts of the user's question.\n## tagging rule:\n- tag the          tasks" (CPRS_PROMPT)
#:               supporting facts with 'fact'"
#: token         "Extract the keywords according the user's query"                     paper, keyword example
#:                                                                                    (verbatim)
#: paragraph,    "Retrieve chunks or paragraphs from the document that are related     paper, paragraph example
#: chunk         to the user's query."
#: ============  ===================================================================  =============================
#:
#: Encoder critics (the embedded MiniLM default) keep :data:`INSTRUCTIONS`, which they were trained on.
DECODER_INSTRUCTIONS: dict[str, str] = {
    "sentence": (
        "You are an expert for information extraction, your task is to extract some sentences from the documents "
        "as the supporting facts of the user's question.\n## tagging rule:\n- tag the supporting facts with 'fact'"
    ),
    "token": "Extract the keywords according the user's query",
    "paragraph": "Retrieve chunks or paragraphs from the document that are related to the user's query.",
    "chunk": "Retrieve chunks or paragraphs from the document that are related to the user's query.",
}


def check_granularity(granularity: object) -> str:
    """Return ``granularity`` if it is known, else raise a ``ValueError`` listing the choices."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; expected one of {', '.join(map(repr, GRANULARITIES))}")
    return str(granularity)


def instruction_for(granularity: str, language: str = "en", critic_kind: str = "encoder") -> str:
    """The canonical instruction for a granularity, language and kind of critic.

    Args:
        granularity: One of ``token``, ``sentence``, ``paragraph``, ``chunk``.
        language: ``en`` or ``zh``.
        critic_kind: ``encoder`` (our templates, :data:`INSTRUCTIONS`) or ``decoder`` (in English, the released
            model's prompts, :data:`DECODER_INSTRUCTIONS`).

    Raises:
        ValueError: for an unknown granularity, language or critic kind.
    """
    check_granularity(granularity)
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; expected one of {', '.join(map(repr, LANGUAGES))}")
    if critic_kind not in ("encoder", "decoder"):
        raise ValueError(f"unknown critic kind {critic_kind!r}; expected 'encoder' or 'decoder'")
    if critic_kind == "decoder" and language == "en":
        return DECODER_INSTRUCTIONS[granularity]
    return INSTRUCTIONS[language][granularity][0]


#: Joins the query and the evidence of a first pass in a second-hop (multi-hop) query; training and inference share it.
HOP_SEPARATOR = " Known facts: "


def hop_query(query: str, evidence: list[str]) -> str:
    """The query of a second (multi-hop) critic pass: the user's query followed by the best units of the first pass,
    so that a fact found in one window can pull in the fact it refers to in another.

    Examples:
        >>> hop_query("Who wrote it?", ["It is Dune.", "Dune is a novel."])
        'Who wrote it? Known facts: It is Dune. Dune is a novel.'
    """
    if not evidence:
        return query
    return query + HOP_SEPARATOR + " ".join(" ".join(e.split()) for e in evidence)
