"""Agent middleware for LangChain 1.x agents (``langchain.agents.create_agent(model, tools, middleware=[...])``).

* :class:`CPRSPruningMiddleware` prunes the messages that each model call sends, with a
  :class:`~cprs_integrations.langchain.memory.CPRSMessagePruner` (``wrap_model_call``). Like LangChain's
  ``ContextEditingMiddleware``, it changes only the model request (``request.override(messages=...)``): the
  agent's stored state keeps the full history, and every model call is pruned again from it.
* :class:`CPRSToolOutputCompressor` compresses a tool's result for the pending query under a token budget
  (``wrap_tool_call``), keeping ``tool_call_id``, ``name``, ``id``, ``status`` and ``artifact``. Like any
  ``wrap_tool_call`` result, the compressed ``ToolMessage`` is what the agent stores and what later model calls see;
  the full output is not kept (the figures of the compression are in ``response_metadata["cprs"]``).

Both load the critic on first use (``CPRSEngine.shared``) unless ``engine=`` is given, and have the asynchronous
hooks (``awrap_model_call``, ``awrap_tool_call``) for ``agent.ainvoke`` / ``astream``.

Examples:
    >>> from langchain.agents import create_agent
    >>> agent = create_agent(
    ...     "openai:gpt-5-mini",
    ...     tools=[search],
    ...     middleware=[
    ...         CPRSToolOutputCompressor(max_tokens=800, tools=["search"]),
    ...         CPRSPruningMiddleware(max_tokens=6000, keep_last_turns=2),
    ...     ],
    ... )  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AnyMessage, BaseMessage, HumanMessage, ToolMessage
from pydantic import ConfigDict, Field, model_validator

from cprs_integrations.engine.budget import resolve_token_counter
from cprs_integrations.engine.options import MEMORY_ADAPTER_FIELDS, CompressionOptions, option_fields_model
from cprs_integrations.langchain._settings import EngineSettings, check_query
from cprs_integrations.langchain.compressor import compression_metadata
from cprs_integrations.langchain.memory import CPRSMessagePruner, _compressed_content, _default_query, _text_parts

try:
    from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest, ModelResponse
except ImportError as e:
    raise ImportError(
        'the CPRS agent middleware needs langchain>=1.0 (create_agent): pip install "cprs-integrations[langchain]"'
    ) from e

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool
    from langgraph.prebuilt.tool_node import ToolCallRequest
    from langgraph.types import Command

    from cprs_integrations.engine.result import CompressionResult

__all__ = ["CPRSPruningMiddleware", "CPRSToolOutputCompressor"]

#: Where the figures of a tool output's compression go in ``ToolMessage.response_metadata``.
METADATA_KEY = "cprs"


class CPRSPruningMiddleware(AgentMiddleware[AgentState[Any], Any, Any]):
    """Prune the history that each model call of an agent sends, with :class:`CPRSMessagePruner`.

    The request's system message and messages are pruned together (so ``max_tokens`` counts the system prompt
    too); the system message is sent unchanged, the messages pruned as :func:`prune_messages` does: system
    messages and the last ``keep_last_turns`` turns verbatim, older text compressed for the last human message,
    tool calls paired with their results, roles alternating (``keep_alternation``). Only the request changes; the
    agent's state keeps every message. A history within ``max_tokens`` is sent as it is (nothing is scored).

    Args:
        pruner: A configured :class:`CPRSMessagePruner` (as LangChain's ``ContextEditingMiddleware`` takes its
            edits); or leave it out and pass its settings instead.
        **settings: The fields of :class:`CPRSMessagePruner`: ``max_tokens`` (required), ``keep_last_turns``,
            ``start_on``, ``keep_alternation``, ``query``, ``engine`` / ``model`` / ``engine_kwargs`` and the
            compression options (``granularity``, ``score_threshold``, ``token_counter``, ...).

    Raises:
        ValueError: both ``pruner`` and settings, an unknown setting, or an invalid value (the message names it).
        TypeError: ``pruner`` is not a :class:`CPRSMessagePruner`.

    Examples:
        >>> agent = create_agent(model, tools, middleware=[CPRSPruningMiddleware(max_tokens=4000)])  # doctest: +SKIP
        >>> agent.invoke({"messages": [("user", "What changed in v2?")]})  # doctest: +SKIP
    """

    def __init__(self, pruner: CPRSMessagePruner | None = None, **settings: Any) -> None:
        super().__init__()
        if pruner is not None and settings:
            raise ValueError(f"pass pruner= or the pruner's settings ({', '.join(sorted(settings))}), not both")
        if pruner is None:
            pruner = CPRSMessagePruner(**settings)
        elif not isinstance(pruner, CPRSMessagePruner):
            raise TypeError(f"pruner must be a CPRSMessagePruner, got {type(pruner).__name__}")
        self.pruner = pruner
        self.tools = []  # registers no tool of its own

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any]:
        """Call the model with the request's messages pruned.

        Raises:
            ValueError: no query (none configured and no human text in the history) when something must be
                compressed.
        """
        if not request.messages:
            return handler(request)
        pruned = self.pruner.invoke(_with_system(request))
        return handler(_override_messages(request, pruned))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any]:
        """:meth:`wrap_model_call` without blocking the event loop."""
        if not request.messages:
            return await handler(request)
        pruned = await self.pruner.ainvoke(_with_system(request))
        return await handler(_override_messages(request, pruned))


def _with_system(request: ModelRequest[Any]) -> list[BaseMessage]:
    system = [request.system_message] if request.system_message is not None else []
    return [*system, *request.messages]


def _override_messages(request: ModelRequest[Any], pruned: list[BaseMessage]) -> ModelRequest[Any]:
    # System messages are always kept, in order: the first is the copy of the request's system message.
    messages: list[AnyMessage] = list(pruned[1:] if request.system_message is not None else pruned)  # type: ignore[arg-type]
    return request.override(messages=messages)


_ToolOutputOptions = option_fields_model("_ToolOutputOptions", MEMORY_ADAPTER_FIELDS)


class _ToolOutputSettings(EngineSettings, _ToolOutputOptions):
    """What :class:`CPRSToolOutputCompressor` is configured with (checked on construction)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    max_tokens: int = Field(
        ge=1,
        description="Token budget of the text of one tool result; a result within it is returned untouched.",
    )
    query: str | None = Field(
        default=None,
        description="What tool outputs are compressed for; None uses the text of the last HumanMessage.",
    )

    @model_validator(mode="after")
    def _check(self) -> _ToolOutputSettings:
        if self.query is not None:
            check_query(self.query)
        self.compression_options()
        return self

    def compression_options(self) -> CompressionOptions:
        return CompressionOptions.of(self, MEMORY_ADAPTER_FIELDS)


class CPRSToolOutputCompressor(AgentMiddleware[AgentState[Any], Any, Any]):
    """Compress what a tool returns to an agent: keep the parts relevant to the pending query, within a budget.

    After the tool runs, the text of its ``ToolMessage`` (string content, or its text blocks; other blocks are kept)
    is compressed for the query (default: the text of the last ``HumanMessage`` of the agent's state) so that it
    holds at most ``max_tokens`` tokens (``token_counter``). The result is a copy of the tool's message with the
    new content and the same ``tool_call_id``, ``name``, ``id``, ``status`` and ``artifact``; the figures of the
    compression go to ``response_metadata["cprs"]`` (``original_tokens``, ``compressed_tokens``, ``ratio`` and, per
    text part, the figures of ``metadata["cprs"]`` of :class:`CPRSDocumentCompressor`: spans, scores, ...). Left as
    they are: results within ``max_tokens`` (nothing is scored), error results (``status="error"``), a ``Command``
    returned by a tool, and the tools not named in ``tools``.

    Args:
        tools: Tools (or tool names) whose results are compressed; ``None``: every tool.
        **settings: ``max_tokens`` (required, at least 1), ``query`` (a fixed query instead of the last human
            message), ``engine`` / ``model`` / ``engine_kwargs`` (see :class:`CPRSMessagePruner`) and the
            compression options ``granularity``, ``score_threshold``, ``instruction``, ``language``,
            ``token_counter``, ``separator``, ``lexical_weight``.

    Raises:
        ValueError: an unknown setting or an invalid value (the message names it); when a result is compressed
            without a ``query``, a state with no human text.

    Examples:
        >>> compressor = CPRSToolOutputCompressor(max_tokens=500, tools=["fetch_page"])
        >>> agent = create_agent(model, [fetch_page], middleware=[compressor])  # doctest: +SKIP
    """

    def __init__(self, *, tools: Sequence[str | BaseTool] | None = None, **settings: Any) -> None:
        super().__init__()
        self.settings = _ToolOutputSettings(**settings)
        if tools is not None and (isinstance(tools, str) or not isinstance(tools, Sequence)):
            raise ValueError(f"tools must be a list of tools or tool names, got {tools!r}")
        self._tool_names = None if tools is None else {t if isinstance(t, str) else t.name for t in tools}
        self.tools = []  # registers no tool of its own

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]],
    ) -> ToolMessage | Command[Any]:
        """Run the tool, then compress its result (see the class docstring for what is left as it is)."""
        result = handler(request)
        work = self._work(request, result)
        if work is None:
            return result
        message, query, texts = work
        engine = self.settings.get_engine()
        options = self.settings.compression_options()
        compressed = engine.compress(query, texts, options, target_tokens=self.settings.max_tokens)
        return _compressed_message(message, compressed)

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
    ) -> ToolMessage | Command[Any]:
        """:meth:`wrap_tool_call` without blocking the event loop (the critic runs in a worker thread)."""
        result = await handler(request)
        work = self._work(request, result)
        if work is None:
            return result
        message, query, texts = work
        engine = await self.settings.aget_engine()
        options = self.settings.compression_options()
        compressed = await engine.acompress(query, texts, options, target_tokens=self.settings.max_tokens)
        return _compressed_message(message, compressed)

    def _work(
        self, request: ToolCallRequest, result: ToolMessage | Command[Any]
    ) -> tuple[ToolMessage, str, list[str]] | None:
        """The tool's message, the query and the texts to compress; ``None`` when the result is left as it is."""
        if not isinstance(result, ToolMessage) or result.status == "error":
            return None
        name = request.tool.name if request.tool is not None else request.tool_call["name"]
        if self._tool_names is not None and name not in self._tool_names:
            return None
        texts = [part.text for part in _text_parts(0, result)]
        count = resolve_token_counter(self.settings.token_counter)
        if sum(count(text) for text in texts) <= self.settings.max_tokens:
            return None
        return result, self.settings.query or _state_query(request.state), texts


def _state_query(state: Any) -> str:
    """The text of the last ``HumanMessage`` of the agent's state (a dict or an object with ``messages``)."""
    messages = state.get("messages", []) if isinstance(state, dict) else getattr(state, "messages", [])
    messages = list(messages or [])
    human = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage)]
    return _default_query(messages, human)


def _compressed_message(message: ToolMessage, results: list[CompressionResult]) -> ToolMessage:
    parts = _text_parts(0, message)
    content = _compressed_content(0, message.content, {(p.message, p.block): r.text for p, r in zip(parts, results)})
    original = sum(r.original_tokens for r in results)
    kept = sum(r.compressed_tokens for r in results)
    figures = {
        "original_tokens": original,
        "compressed_tokens": kept,
        "ratio": original / kept if kept else (None if original else 1.0),
        "parts": [compression_metadata(r) for r in results],
    }
    metadata = {**message.response_metadata, METADATA_KEY: figures}
    return message.model_copy(update={"content": content, "response_metadata": metadata})
