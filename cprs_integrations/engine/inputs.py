"""Checks of what a caller passes besides the options: the query and the texts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def check_texts(texts: Any) -> list[str]:
    """``texts`` as a new list, or an error naming the bad item.

    Raises:
        TypeError: not a sequence of ``str`` (a single ``str`` included).
        ValueError: a text with a lone surrogate (not encodable as UTF-8), naming ``texts[i]``.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, got a single str; wrap it: compress(query, [text])")
    if not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
        _check_encodable(text, f"texts[{i}]")
    return list(texts)


def check_query(query: Any) -> str:
    """``query`` if it is a non-empty string.

    Raises:
        TypeError: not a ``str``.
        ValueError: empty or whitespace only, or a lone surrogate.
    """
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise ValueError(f"query must be a non-empty string (it guides what is kept), got {query!r}")
    _check_encodable(query, "query")
    return query


def _check_encodable(text: str, name: str) -> None:
    """Tokenizers need valid Unicode: a lone surrogate (e.g. from a bad ``surrogateescape`` decode) is refused."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"{name} holds a character that is not valid Unicode ({text[e.start]!r} at index {e.start}: "
            f"{e.reason}); decode the source with errors='replace' or remove it"
        ) from None
