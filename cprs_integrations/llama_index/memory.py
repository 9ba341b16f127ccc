"""CPRSMemoryBlock: long-term agent memory that keeps old turns and returns them compressed for the current query."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, NamedTuple

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator
from llama_index.core.memory import BaseMemoryBlock

from cprs_integrations.engine.budget import resolve_token_counter
from cprs_integrations.engine.options import MEMORY_ADAPTER_FIELDS, CompressionOptions, option_fields_model
from cprs_integrations.llama_index._compression import check_engine, load_engine, model_name

# LlamaIndex's Memory counts tokens with tiktoken's cl100k_base by default: the block counts the same way, so that
# the block and Memory agree on sizes (the one adapter default that differs from CompressionOptions).
_MemoryOptions = option_fields_model("_MemoryOptions", MEMORY_ADAPTER_FIELDS, token_counter="cl100k_base")

if TYPE_CHECKING:
    from cprs_integrations.engine.engine import CPRSEngine

#: Between rendered messages; each message is one paragraph for the critic.
MESSAGE_SEPARATOR = "\n\n"
#: How many recent outputs ``atruncate`` can shrink again from their full history.
_REMEMBERED_OUTPUTS = 16
#: Attempts to meet ``max_tokens`` when joining parts shifts the token count by a few tokens.
_FIT_ATTEMPTS = 3


class _Rendered(NamedTuple):
    """What an output was made from, so that ``atruncate`` can compress the full history again."""

    query: str | None
    pinned: str
    turns: tuple[str, ...]

    @property
    def history(self) -> str:
        return MESSAGE_SEPARATOR.join(self.turns)


class CPRSMemoryBlock(_MemoryOptions, BaseMemoryBlock[str]):
    """Keep the messages flushed out of short-term memory; return them compressed for the current question.

    Plugged into ``Memory.from_defaults(memory_blocks=[...])``: when the chat history passes the memory's token
    limit, LlamaIndex flushes its oldest messages into this block. On every ``Memory.aget`` the block renders them
    (``role: text``, one paragraph per message) and keeps, under ``max_tokens``, the sentences the critic finds
    relevant to the current query: the last user message of the active history. System messages that were flushed
    are kept verbatim, first, and never compressed; the latest turn always stays in short-term memory (LlamaIndex
    never flushes it). Without a user message to guide the critic, the most recent messages that fit are kept.

    With ``priority`` >= 1 (the default is 1), ``Memory`` may ask the block to shrink when the whole prompt is over
    its limit: :meth:`atruncate` compresses the history again under the smaller budget instead of dropping it.

    Args:
        name: Block name (the XML tag of the block in the memory prompt).
        max_tokens: Token budget of the block's content, counted with ``token_counter``.
        model: Critic to load (local folder or hub id); ``None`` loads the embedded default critic.
        engine: A ready :class:`~cprs_integrations.engine.engine.CPRSEngine` (``model``/``engine_kwargs`` ignored).
        engine_kwargs: Options of :meth:`CPRSEngine.from_pretrained`.
        **options: ``granularity``, ``score_threshold``, ``instruction``, ``language``, ``separator``,
            ``lexical_weight``: as in :class:`~cprs_integrations.engine.options.CompressionOptions` (``paragraph``
            keeps whole messages).
        token_counter: How tokens are counted; ``cl100k_base`` by default, the encoding of ``Memory``'s default
            tokenizer, so that the block and ``Memory`` agree on sizes.
        messages: The flushed messages (copies), oldest first.

    Examples:
        >>> from llama_index.core.memory import Memory
        >>> from cprs_integrations.llama_index import CPRSMemoryBlock
        >>> memory = Memory.from_defaults(
        ...     token_limit=4000, memory_blocks=[CPRSMemoryBlock(max_tokens=500)]
        ... )  # doctest: +SKIP
        >>> await memory.aput_messages(conversation)  # doctest: +SKIP
        >>> messages = await memory.aget()  # doctest: +SKIP
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    name: str = Field(default="CompressedHistory", description="Name of the block in the memory prompt.")
    priority: int = Field(
        default=1,
        description="Truncation priority (0 = never truncated). At 1 or more, Memory may call atruncate, which "
        "compresses the history further rather than dropping it.",
    )
    max_tokens: int = Field(default=1024, ge=1, description="Token budget of the block's content.")
    model: str | None = Field(
        default=None,
        description="Critic to load: a local folder or hub id; None loads the embedded default critic. "
        "Ignored when an engine is given.",
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of CPRSEngine.from_pretrained (device, dtype...)."
    )
    messages: list[ChatMessage] = Field(
        default_factory=list, description="The messages flushed out of short-term memory (copies), oldest first."
    )

    _engine: CPRSEngine | None = PrivateAttr(default=None)
    # Recent outputs -> what they were made from; lets atruncate recompress from the full history. A cache keyed by
    # the output itself, so concurrent sessions never read each other's query.
    _rendered: OrderedDict[str, _Rendered] = PrivateAttr(default_factory=OrderedDict)

    def __init__(self, *, engine: CPRSEngine | None = None, **data: Any) -> None:
        super().__init__(**data)
        self._engine = check_engine(engine, self.model, self.engine_kwargs)

    @field_validator("model", mode="before")
    @classmethod
    def _model_as_str(cls, value: Any) -> Any:
        return model_name(value)

    @model_validator(mode="after")
    def _check_options(self) -> CPRSMemoryBlock:
        self.compression_options()
        return self

    def compression_options(self) -> CompressionOptions:
        """The :class:`CompressionOptions` of the block (its budget, ``max_tokens`` or less, is set per call)."""
        return CompressionOptions.of(self, MEMORY_ADAPTER_FIELDS)

    @property
    def engine(self) -> CPRSEngine:
        """The engine in use (loads the shared one on first access)."""
        if self._engine is None:
            self._engine = load_engine(None, self.model, self.engine_kwargs)
        return self._engine

    # ---------------------------------------------------------------------------------------------- LlamaIndex

    async def _aput(self, messages: list[ChatMessage]) -> None:
        self.messages.extend(m.model_copy(deep=True) for m in messages if _text_of(m))

    async def _aget(
        self, messages: list[ChatMessage] | None = None, session_id: str | None = None, **block_kwargs: Any
    ) -> str:
        kept = [m for m in self.messages if _in_session(m, session_id)]
        if not kept:
            return ""
        pinned = MESSAGE_SEPARATOR.join(_render(m) for m in kept if m.role == MessageRole.SYSTEM)
        turns = tuple(_render(m) for m in kept if m.role != MessageRole.SYSTEM)
        rendered = _Rendered(_last_user_text(messages or []), pinned, turns)
        return await self._fit(rendered, self.max_tokens) or ""

    async def atruncate(self, content: str, tokens_to_truncate: int) -> str | None:
        """Compress the block's content by about ``tokens_to_truncate`` tokens instead of dropping it.

        Args:
            content: What :meth:`aget` returned.
            tokens_to_truncate: How many tokens ``Memory`` wants removed.

        Returns:
            The smaller content, or ``None`` when nothing fits (or ``content`` did not come from this block).
        """
        rendered = self._rendered.get(content)
        if not content or rendered is None:
            return None
        limit = self._count(content) - max(0, int(tokens_to_truncate))
        return await self._fit(rendered, limit) if limit > 0 else None

    # ------------------------------------------------------------------------------------------------- helpers

    async def _fit(self, rendered: _Rendered, limit: int) -> str | None:
        """The pinned messages plus as much of the history as fits in ``limit`` tokens (compressed if needed)."""
        full = _join(rendered.pinned, rendered.history)
        if self._count(full) <= limit:
            return self._remember(full, rendered)
        budget = limit - (self._count(rendered.pinned + MESSAGE_SEPARATOR) if rendered.pinned else 0)
        content = rendered.pinned  # system messages are never cut, even when they alone pass the limit
        for _ in range(_FIT_ATTEMPTS):
            if budget < 1:
                break
            attempt = _join(rendered.pinned, await self._shrink(rendered, budget))
            over = self._count(attempt) - limit
            if over <= 0:
                content = attempt
                break
            budget -= over
        return self._remember(content, rendered) if content else None

    async def _shrink(self, rendered: _Rendered, budget: int) -> str:
        if rendered.query is None:
            return self._recent_turns(rendered.turns, budget)
        engine = self._engine if self._engine is not None else await asyncio.to_thread(lambda: self.engine)
        [result] = await engine.acompress(
            rendered.query, [rendered.history], self.compression_options(), target_tokens=budget
        )
        return result.text

    def _recent_turns(self, turns: tuple[str, ...], budget: int) -> str:
        """The latest whole messages that fit in ``budget`` tokens (no query to guide the critic)."""
        start = len(turns)
        while start > 0 and self._count(MESSAGE_SEPARATOR.join(turns[start - 1 :])) <= budget:
            start -= 1
        return MESSAGE_SEPARATOR.join(turns[start:])

    def _remember(self, content: str, rendered: _Rendered) -> str:
        self._rendered[content] = rendered
        self._rendered.move_to_end(content)
        while len(self._rendered) > _REMEMBERED_OUTPUTS:
            self._rendered.popitem(last=False)
        return content

    def _count(self, text: str) -> int:
        return resolve_token_counter(self.token_counter)(text) if text else 0


def _text_of(message: ChatMessage) -> str:
    return (message.content or "").strip()


def _render(message: ChatMessage) -> str:
    return f"{message.role.value}: {_text_of(message)}"


def _join(pinned: str, history: str) -> str:
    return MESSAGE_SEPARATOR.join(part for part in (pinned, history) if part)


def _in_session(message: ChatMessage, session_id: str | None) -> bool:
    """Memory tags flushed messages with its session id; a block shared by sessions keeps them apart."""
    return session_id is None or message.additional_kwargs.get("session_id", session_id) == session_id


def _last_user_text(messages: list[ChatMessage]) -> str | None:
    for message in reversed(messages):
        if message.role == MessageRole.USER and _text_of(message):
            return _text_of(message)
    return None
