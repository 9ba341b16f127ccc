"""Agent memory pruning: compress the older turns of a chat history under a token budget, keep the rest verbatim.

What is kept verbatim: every ``SystemMessage`` and the last ``keep_last_turns`` turns (a turn starts at a
``HumanMessage``). What is compressed: the text of every other message (string content, or the text blocks of a
list content; other blocks are kept as they are). An ``AIMessage`` with tool calls and a ``ToolMessage`` keep their
structure (``tool_calls``, ``tool_call_id``, ``name``, ``id``) and are never dropped, even when their text is
compressed to nothing, because a tool result without its call (or the reverse) is rejected by chat providers.
Other older messages whose text is compressed to nothing are dropped.

Budget: ``max_tokens`` counts the tokens of each text part of the returned messages (string content or text
block) with ``token_counter``, summed; roles, tool-call arguments and non-text blocks are not counted. The older
text gets what the verbatim parts leave. If the verbatim parts alone exceed ``max_tokens``, the older text is
compressed to nothing and the verbatim parts are still returned untouched: the result is then above
``max_tokens`` (a warning is logged). A history already within ``max_tokens`` is returned as it is (copied).

``start_on="human"`` (as in LangChain's ``trim_messages``): after pruning, the messages between the system
messages and the first ``HumanMessage`` are left out, so the conversation starts on a human turn (some chat
providers reject a history that starts with an AI or tool message). Tool calls and their results before that point
go together. A history without a ``HumanMessage`` is returned without that cut (a warning is logged).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    MessageLikeRepresentation,
    SystemMessage,
    ToolMessage,
    convert_to_messages,
)
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, Field, model_validator

from cprs_integrations.engine.budget import resolve_token_counter
from cprs_integrations.engine.inputs import check_query
from cprs_integrations.engine.options import MEMORY_ADAPTER_FIELDS, CompressionOptions, option_fields_model
from cprs_integrations.langchain._settings import EngineSettings

if TYPE_CHECKING:
    from cprs_integrations.engine.engine import CPRSEngine

logger = logging.getLogger(__name__)

MessagesInput = Sequence[MessageLikeRepresentation] | PromptValue


@dataclass(frozen=True)
class _TextPart:
    """One compressible piece of text: ``messages[message].content`` (block ``None``) or one of its blocks."""

    message: int
    block: int | None
    text: str


@dataclass(frozen=True)
class _Plan:
    """What to keep verbatim, what to compress (``parts``), under which budget (tokens left for ``parts``)."""

    messages: list[BaseMessage]
    verbatim: list[bool]
    parts: list[_TextPart]
    budget: int
    query: str
    start_on: str | None = None


def prune_messages(
    messages: MessagesInput,
    query: str | None = None,
    *,
    max_tokens: int,
    engine: CPRSEngine | None = None,
    keep_last_turns: int = 1,
    start_on: Literal["human"] | None = None,
    options: CompressionOptions | None = None,
    **overrides: Any,
) -> list[BaseMessage]:
    """Compress the older turns of a chat history so that its text fits ``max_tokens``.

    See the module docstring for what is kept verbatim, what is compressed and how the budget is counted.

    Args:
        messages: The history (messages, message-like tuples / dicts, or a ``ChatPromptValue``); not modified.
        query: What the older turns are compressed for; default: the text of the last ``HumanMessage``.
        max_tokens: Token budget of the returned text (a non-negative integer).
        engine: The engine; default ``CPRSEngine.shared()`` (the embedded default critic), loaded only when
            something must be compressed.
        keep_last_turns: Number of last turns kept verbatim (0 compresses every turn; system messages stay).
        start_on: ``"human"``: leave out what comes before the first ``HumanMessage`` (system messages aside).
        options: How the older text is compressed (:class:`CompressionOptions`; its budget is ignored: the
            budget is what ``max_tokens`` leaves for the older text).
        **overrides: Options by name, over ``options``: ``granularity``, ``score_threshold``, ``instruction``,
            ``language``, ``token_counter`` (also counts ``max_tokens``), ``separator``, ``lexical_weight``.

    Returns:
        New message objects in the input order.

    Raises:
        ValueError: bad ``max_tokens`` / ``keep_last_turns`` / option, empty ``query``, or no query at all (none
            given and no human text) when something must be compressed.
        TypeError: an unknown option name.

    Example:
        >>> pruned = prune_messages(history, max_tokens=2000)  # doctest: +SKIP
        >>> [type(m).__name__ for m in pruned]  # doctest: +SKIP
        ['SystemMessage', 'HumanMessage', 'AIMessage', 'ToolMessage', 'AIMessage', 'HumanMessage']
    """
    options = _memory_options(options, overrides)
    plan = _plan(messages, query, max_tokens, keep_last_turns, options.token_counter, start_on)
    return _prune(plan, (lambda: engine) if engine is not None else _shared_engine, options)


async def aprune_messages(
    messages: MessagesInput,
    query: str | None = None,
    *,
    max_tokens: int,
    engine: CPRSEngine | None = None,
    keep_last_turns: int = 1,
    start_on: Literal["human"] | None = None,
    options: CompressionOptions | None = None,
    **overrides: Any,
) -> list[BaseMessage]:
    """:func:`prune_messages` without blocking the event loop (the critic runs in a worker thread)."""
    options = _memory_options(options, overrides)
    plan = _plan(messages, query, max_tokens, keep_last_turns, options.token_counter, start_on)
    get_engine = (lambda: engine) if engine is not None else _shared_engine
    return await _aprune(plan, get_engine, options)


_MemoryOptions = option_fields_model("_MemoryOptions", MEMORY_ADAPTER_FIELDS)


class CPRSMessagePruner(EngineSettings, _MemoryOptions, RunnableSerializable[MessagesInput, list[BaseMessage]]):
    """A runnable that prunes a chat history with :func:`prune_messages`: put it in front of a chat model.

    Its input is a list of messages (or a ``ChatPromptValue``), its output the pruned list; ``invoke``,
    ``ainvoke``, ``batch`` and ``|`` work as for any runnable, and each call is traced as one chain run.

    Example:
        >>> pruner = CPRSMessagePruner(max_tokens=4000, keep_last_turns=2)
        >>> chain = prompt | pruner | chat_model  # doctest: +SKIP
        >>> pruned = pruner.invoke(history)  # doctest: +SKIP
    """

    # LangChain base classes allow extra fields; a typo (top_n=2 for k) must be an error, not ignored.
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    max_tokens: int = Field(ge=0, description="Token budget of the text of the returned messages.")
    query: str | None = Field(
        default=None,
        description="What older turns are compressed for; None uses the text of the last HumanMessage.",
    )
    keep_last_turns: int = Field(default=1, ge=0, description="Number of last turns kept verbatim.")
    start_on: Literal["human"] | None = Field(
        default=None,
        description="'human': leave out the messages before the first HumanMessage (system messages aside).",
    )

    @model_validator(mode="after")
    def _check_options(self) -> CPRSMessagePruner:
        self._options()
        return self

    def invoke(self, input: MessagesInput, config: RunnableConfig | None = None, **kwargs: Any) -> list[BaseMessage]:
        """Prune ``input`` (a list of messages or a prompt value)."""
        return self._call_with_config(self._prune, input, config)

    async def ainvoke(
        self, input: MessagesInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[BaseMessage]:
        """Prune ``input`` without blocking the event loop."""
        return await self._acall_with_config(self._aprune, input, config)

    def _prune(self, messages: MessagesInput) -> list[BaseMessage]:
        plan = _plan(messages, self.query, self.max_tokens, self.keep_last_turns, self.token_counter, self.start_on)
        return _prune(plan, self.get_engine, self._options())

    async def _aprune(self, messages: MessagesInput) -> list[BaseMessage]:
        plan = _plan(messages, self.query, self.max_tokens, self.keep_last_turns, self.token_counter, self.start_on)
        return await _aprune(plan, self.get_engine, self._options())

    def _options(self) -> CompressionOptions:
        return CompressionOptions(**{name: getattr(self, name) for name in MEMORY_ADAPTER_FIELDS})


# ----------------------------------------------------------------------------------------------- internals


def _memory_options(options: CompressionOptions | None, overrides: dict[str, Any]) -> CompressionOptions:
    """The options for the older text: only what applies to it (its budget comes from ``max_tokens``)."""
    not_here = sorted(set(overrides) - set(MEMORY_ADAPTER_FIELDS))
    if not_here:
        raise TypeError(
            f"unknown option(s) for pruning {', '.join(map(repr, not_here))}; "
            f"options are {', '.join(MEMORY_ADAPTER_FIELDS)} (the budget is max_tokens)"
        )
    return CompressionOptions.build(options, **overrides)


def _shared_engine() -> CPRSEngine:
    from cprs_integrations.engine.engine import CPRSEngine

    return CPRSEngine.shared()


def _prune(plan: _Plan, get_engine: Callable[[], CPRSEngine], options: CompressionOptions) -> list[BaseMessage]:
    """Compress the plan's older text with the engine (loaded only if needed) and rebuild the messages."""
    if not plan.parts or plan.budget <= 0:
        return _assemble(plan, [])
    texts = [part.text for part in plan.parts]
    results = get_engine().compress(plan.query, texts, options, target_tokens=plan.budget)
    return _assemble(plan, [result.text for result in results])


async def _aprune(
    plan: _Plan, get_engine: Callable[[], CPRSEngine], options: CompressionOptions
) -> list[BaseMessage]:
    if not plan.parts or plan.budget <= 0:
        return _assemble(plan, [])
    engine = await asyncio.to_thread(get_engine)  # the first call loads the critic: not on the event loop
    texts = [part.text for part in plan.parts]
    results = await engine.acompress(plan.query, texts, options, target_tokens=plan.budget)
    return _assemble(plan, [result.text for result in results])


def _plan(
    messages: MessagesInput,
    query: str | None,
    max_tokens: int,
    keep_last_turns: int,
    token_counter: Any,
    start_on: str | None = None,
) -> _Plan:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise ValueError(f"max_tokens must be a non-negative integer, got {max_tokens!r}")
    if isinstance(keep_last_turns, bool) or not isinstance(keep_last_turns, int) or keep_last_turns < 0:
        raise ValueError(f"keep_last_turns must be a non-negative integer, got {keep_last_turns!r}")
    if start_on not in (None, "human"):
        raise ValueError(f"start_on must be None or 'human', got {start_on!r}")
    if isinstance(messages, (str, BaseMessage)):
        raise TypeError(f"messages must be a list of messages, got a single {type(messages).__name__}")
    messages = convert_to_messages(messages)
    count = resolve_token_counter(token_counter)

    human = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage)]
    # The verbatim tail starts at the HumanMessage that opens the last `keep_last_turns` turns.
    verbatim_from = human[-min(keep_last_turns, len(human))] if keep_last_turns and human else len(messages)
    verbatim = [isinstance(m, SystemMessage) or i >= verbatim_from for i, m in enumerate(messages)]

    if query is not None:
        query = check_query(query)
    verbatim_tokens = sum(count(p.text) for i, m in enumerate(messages) if verbatim[i] for p in _text_parts(i, m))
    parts = [p for i, m in enumerate(messages) if not verbatim[i] for p in _text_parts(i, m)]
    if verbatim_tokens + sum(count(p.text) for p in parts) <= max_tokens:
        # Already within budget: nothing to compress, every message is copied as it is.
        return _Plan(messages, [True] * len(messages), [], max_tokens - verbatim_tokens, query or "", start_on)
    if verbatim_tokens > max_tokens:
        logger.warning(
            "cprs: the system messages and last %d turn(s) hold %d tokens, above max_tokens=%d; older turns are "
            "compressed to nothing and the result stays above the budget",
            keep_last_turns,
            verbatim_tokens,
            max_tokens,
        )
    if query is None:
        query = _default_query(messages, human)
    return _Plan(messages, verbatim, parts, max_tokens - verbatim_tokens, query, start_on)


def _default_query(messages: list[BaseMessage], human: list[int]) -> str:
    for i in reversed(human):
        text = str(messages[i].text)
        if text.strip():
            return text
    raise ValueError("no query: pass query=, or end the history with a HumanMessage that has text")


def _text_parts(index: int, message: BaseMessage) -> list[_TextPart]:
    if isinstance(message.content, str):
        return [_TextPart(index, None, message.content)]
    return [
        _TextPart(index, j, block if isinstance(block, str) else block["text"])
        for j, block in enumerate(message.content)
        if _is_text_block(block)
    ]


def _is_text_block(block: Any) -> bool:
    return isinstance(block, str) or (
        isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)
    )


def _keeps_structure(message: BaseMessage) -> bool:
    """Tool calls and tool results must stay paired: such messages are never dropped."""
    if isinstance(message, ToolMessage):
        return True
    return isinstance(message, AIMessage) and bool(message.tool_calls or message.invalid_tool_calls)


def _copy(message: BaseMessage, **update: Any) -> BaseMessage:
    return message.model_copy(update=update or None, deep=True)


def _assemble(plan: _Plan, texts: list[str]) -> list[BaseMessage]:
    new_text: dict[tuple[int, int | None], str] = {
        (part.message, part.block): text for part, text in zip(plan.parts, texts)
    }
    out = []
    for i, message in enumerate(plan.messages):
        if plan.verbatim[i]:
            out.append(_copy(message))
            continue
        had_text = any(p.text.strip() for p in _text_parts(i, message))
        content = _compressed_content(i, message.content, new_text)
        if had_text and not content and not _keeps_structure(message):
            continue
        out.append(_copy(message, content=content))
    return _start_on_human(out) if plan.start_on == "human" else out


def _start_on_human(messages: list[BaseMessage]) -> list[BaseMessage]:
    """Leave out the non-system messages before the first ``HumanMessage``."""
    first = next((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), None)
    if first is None:
        logger.warning("cprs: start_on='human' but the history has no HumanMessage; nothing was left out")
        return messages
    return [m for i, m in enumerate(messages) if i >= first or isinstance(m, SystemMessage)]


def _compressed_content(
    index: int, content: str | list[Any], new_text: dict[tuple[int, int | None], str]
) -> str | list[Any]:
    """The content with each text part replaced by its compression (text blocks compressed to nothing go)."""
    if isinstance(content, str):
        return new_text.get((index, None), "")
    blocks: list[Any] = []
    for j, block in enumerate(content):
        if not _is_text_block(block):
            blocks.append(deepcopy(block))
            continue
        text = new_text.get((index, j), "")
        if text:
            blocks.append(text if isinstance(block, str) else {**deepcopy(block), "text": text})
    return blocks
