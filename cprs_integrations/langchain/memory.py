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

``keep_alternation=True`` (the default): dropping messages never puts two human messages, or two AI messages,
side by side that had another message between them in the input (some chat providers reject such a history;
system messages do not count as a separation, as several providers lift them out of the conversation). Where a
drop would, one dropped message of the other role is kept instead, with one unit: of the candidates, the message
whose best unit has the highest keep score keeps that unit (even below ``score_threshold``) or, if that unit is
larger than what is left of the budget, the best finer pieces of it (sentences, clauses, words) that fit.
Messages are never merged. The unit counts in ``max_tokens``: the older text is scored once and selected under the
budget; the units needed are reserved and the rest is selected again under the budget minus the reserves
(repeated while a new gap opens). If no budget is left for a unit, the gap stays and a warning is logged.
``keep_alternation=False`` drops such messages as any other.
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
from cprs_integrations.engine.result import TokenScores
from cprs_integrations.langchain._settings import EngineSettings

if TYPE_CHECKING:
    from cprs_integrations.engine.engine import CPRSEngine
    from cprs_integrations.engine.result import CompressionResult

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
    keep_alternation: bool = True


def prune_messages(
    messages: MessagesInput,
    query: str | None = None,
    *,
    max_tokens: int,
    engine: CPRSEngine | None = None,
    keep_last_turns: int = 1,
    start_on: Literal["human"] | None = None,
    keep_alternation: bool = True,
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
        keep_alternation: Keep roles alternating: an older message whose removal would put two human (or two AI)
            messages side by side keeps its best unit, counted in ``max_tokens`` (see the module docstring).
            Needs ``engine.score`` and ``engine.select``.
        options: How the older text is compressed (:class:`CompressionOptions`; its budget is ignored: the
            budget is what ``max_tokens`` leaves for the older text).
        **overrides: Options by name, over ``options``: ``granularity``, ``score_threshold``, ``instruction``,
            ``language``, ``token_counter`` (also counts ``max_tokens``), ``separator``, ``lexical_weight``.

    Returns:
        New message objects in the input order.

    Raises:
        ValueError: bad ``max_tokens`` / ``keep_last_turns`` / ``keep_alternation`` / option, empty ``query``, or
            no query at all (none given and no human text) when something must be compressed.
        TypeError: an unknown option name.

    Examples:
        >>> pruned = prune_messages(history, max_tokens=2000)  # doctest: +SKIP
        >>> [type(m).__name__ for m in pruned]  # doctest: +SKIP
        ['SystemMessage', 'HumanMessage', 'AIMessage', 'ToolMessage', 'AIMessage', 'HumanMessage']
    """
    options = _memory_options(options, overrides)
    plan = _plan(messages, query, max_tokens, keep_last_turns, options.token_counter, start_on, keep_alternation)
    return _prune(plan, (lambda: engine) if engine is not None else _shared_engine, options)


async def aprune_messages(
    messages: MessagesInput,
    query: str | None = None,
    *,
    max_tokens: int,
    engine: CPRSEngine | None = None,
    keep_last_turns: int = 1,
    start_on: Literal["human"] | None = None,
    keep_alternation: bool = True,
    options: CompressionOptions | None = None,
    **overrides: Any,
) -> list[BaseMessage]:
    """:func:`prune_messages` without blocking the event loop (the critic runs in a worker thread).

    Cancelling the task withdraws the windows it queued (``engine.acompress`` / ``engine.ascore``).
    """
    options = _memory_options(options, overrides)
    plan = _plan(messages, query, max_tokens, keep_last_turns, options.token_counter, start_on, keep_alternation)
    get_engine = (lambda: engine) if engine is not None else _shared_engine
    return await _aprune(plan, get_engine, options)


_MemoryOptions = option_fields_model("_MemoryOptions", MEMORY_ADAPTER_FIELDS)


class CPRSMessagePruner(EngineSettings, _MemoryOptions, RunnableSerializable[MessagesInput, list[BaseMessage]]):
    """A runnable that prunes a chat history with :func:`prune_messages`: put it in front of a chat model.

    Its input is a list of messages (or a ``ChatPromptValue``), its output the pruned list; ``invoke``,
    ``ainvoke``, ``batch`` and ``|`` work as for any runnable, and each call is traced as one chain run.

    Examples:
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
    keep_alternation: bool = Field(
        default=True,
        strict=True,
        description="Keep roles alternating: an older message whose removal would put two human (or two AI) "
        "messages side by side keeps its best unit, counted in max_tokens.",
    )

    @model_validator(mode="after")
    def _check_options(self) -> CPRSMessagePruner:
        self._options()
        return self

    @classmethod
    def is_lc_serializable(cls) -> bool:
        """Serializable with ``dumpd`` / ``load`` (``valid_namespaces=["cprs_integrations"]``,
        ``allowed_objects=[CPRSMessagePruner]``),
        unless built with ``engine=`` (an engine instance is not serializable: pass ``model`` / ``engine_kwargs``)."""
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["cprs_integrations", "langchain", "memory"]

    def invoke(self, input: MessagesInput, config: RunnableConfig | None = None, **kwargs: Any) -> list[BaseMessage]:
        """Prune ``input`` (a list of messages or a prompt value)."""
        return self._call_with_config(self._prune, input, config)

    async def ainvoke(
        self, input: MessagesInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[BaseMessage]:
        """Prune ``input`` without blocking the event loop."""
        return await self._acall_with_config(self._aprune, input, config)

    def _prune(self, messages: MessagesInput) -> list[BaseMessage]:
        return _prune(self._plan(messages), self.get_engine, self._options())

    async def _aprune(self, messages: MessagesInput) -> list[BaseMessage]:
        return await _aprune(self._plan(messages), self.get_engine, self._options())

    def _plan(self, messages: MessagesInput) -> _Plan:
        return _plan(
            messages,
            self.query,
            self.max_tokens,
            self.keep_last_turns,
            self.token_counter,
            self.start_on,
            self.keep_alternation,
        )

    def _options(self) -> CompressionOptions:
        return CompressionOptions.of(self, MEMORY_ADAPTER_FIELDS)


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
    engine = get_engine()
    texts = [part.text for part in plan.parts]
    if not plan.keep_alternation:
        results = engine.compress(plan.query, texts, options, target_tokens=plan.budget)
        return _assemble(plan, [result.text for result in results])
    scored = engine.score(plan.query, texts, options)
    return _assemble(plan, _select_keeping_alternation(plan, engine, scored, options))


async def _aprune(plan: _Plan, get_engine: Callable[[], CPRSEngine], options: CompressionOptions) -> list[BaseMessage]:
    if not plan.parts or plan.budget <= 0:
        return _assemble(plan, [])
    engine = await asyncio.to_thread(get_engine)  # the first call loads the critic: not on the event loop
    texts = [part.text for part in plan.parts]
    if not plan.keep_alternation:
        results = await engine.acompress(plan.query, texts, options, target_tokens=plan.budget)
        return _assemble(plan, [result.text for result in results])
    scored = await engine.ascore(plan.query, texts, options)  # cancelling the task withdraws its windows
    kept = await asyncio.to_thread(_select_keeping_alternation, plan, engine, scored, options)
    return _assemble(plan, kept)


def _select_keeping_alternation(
    plan: _Plan, engine: CPRSEngine, scored: list[TokenScores], options: CompressionOptions
) -> list[str]:
    """The kept text of each part of ``plan``: selection under the budget, with one unit reserved in each message
    that must stay to keep roles alternating (module docstring). Scores are reused; only selection runs again.

    Args:
        plan: The pruning plan (its ``parts`` and ``budget``, in tokens of the options' counter).
        engine: Anything with ``select`` (scores in, results out).
        scored: The scores of ``plan.parts``, in order.
        options: The compression options of the older text (their budget is replaced by the plan's).

    Returns:
        One string per part: its kept text (empty when nothing was kept). Kept texts plus reserves never exceed
        ``plan.budget`` tokens.
    """
    results = engine.select(scored, options, target_tokens=plan.budget)
    best_score = [result.score for result in results]
    original = [result.original_tokens for result in results]
    texts = [result.text for result in results]
    reserved: dict[int, CompressionResult] = {}
    while gaps := _alternation_gaps(plan.messages, _contents(plan, texts)):
        added = False
        for candidates in gaps:
            part = max(
                (p for p, tp in enumerate(plan.parts) if tp.message in candidates and tp.text.strip()),
                key=lambda p: best_score[p],
                default=None,
            )
            left = plan.budget - sum(r.compressed_tokens for r in reserved.values())
            if part is None or left <= 0:
                continue
            unit = _best_unit(engine, scored[part], best_score[part], original[part], options, left)
            if unit is not None:
                reserved[part] = unit
                added = True
        if not added:
            break  # no budget left for a unit: _assemble warns about the gaps that stay
        left = plan.budget - sum(r.compressed_tokens for r in reserved.values())
        rest = [p for p in range(len(plan.parts)) if p not in reserved]
        texts = [reserved[p].text if p in reserved else "" for p in range(len(plan.parts))]
        if rest and left > 0:
            for p, result in zip(rest, engine.select([scored[p] for p in rest], options, target_tokens=left)):
                texts[p] = result.text
    return texts


def _best_unit(
    engine: CPRSEngine,
    scored: TokenScores,
    best_score: float,
    original_tokens: int,
    options: CompressionOptions,
    left: int,
) -> CompressionResult | None:
    """The best unit of one text if it fits ``left`` tokens, else the best finer pieces of it that fit.

    The best unit is the one with the highest keep score (``best_score``, ``CompressionResult.score``): with the
    threshold set there, it is the only unit that may be kept. ``None`` when not even a word of it fits.
    """
    [unit] = engine.select([scored], options, target_tokens=max(1, original_tokens), score_threshold=best_score)
    if not unit.spans:
        return None
    if unit.compressed_tokens <= left:
        return unit
    best = max(unit.spans, key=lambda span: span.score)
    inside = (scored.offsets[:, 0] >= best.start) & (scored.offsets[:, 1] <= best.end)
    piece = TokenScores(
        text=scored.text[best.start : best.end],
        offsets=scored.offsets[inside] - best.start,
        probs=scored.probs[inside],
        query=scored.query,
    )
    # Within the unit alone, the engine's finer fallback (sentences, clauses, words) fills ``left``.
    [finer] = engine.select([piece], options, target_tokens=left, score_threshold=None)
    return finer if finer.spans else None


def _role(message: BaseMessage) -> str | None:
    """``human`` or ``ai``: the roles that must alternate; ``None`` for the others (tool, system, ...)."""
    if isinstance(message, HumanMessage):
        return "human"
    return "ai" if isinstance(message, AIMessage) else None


def _alternation_gaps(messages: list[BaseMessage], contents: list[str | list[Any] | None]) -> list[list[int]]:
    """Where dropped messages (content ``None``) put two messages of one role side by side: per such place, the
    dropped messages of the other role (one of them kept restores the alternation). System messages are skipped."""
    gaps: list[list[int]] = []
    previous: int | None = None
    dropped: list[int] = []
    for i, message in enumerate(messages):
        if isinstance(message, SystemMessage):
            continue
        if contents[i] is None:
            dropped.append(i)
            continue
        role = _role(message)
        if previous is not None and dropped and role is not None and role == _role(messages[previous]):
            other = [k for k in dropped if _role(messages[k]) not in (None, role)]
            if other:
                gaps.append(other)
        previous, dropped = i, []
    return gaps


def _plan(
    messages: MessagesInput,
    query: str | None,
    max_tokens: int,
    keep_last_turns: int,
    token_counter: Any,
    start_on: str | None = None,
    keep_alternation: bool = True,
) -> _Plan:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise ValueError(f"max_tokens must be a non-negative integer, got {max_tokens!r}")
    if isinstance(keep_last_turns, bool) or not isinstance(keep_last_turns, int) or keep_last_turns < 0:
        raise ValueError(f"keep_last_turns must be a non-negative integer, got {keep_last_turns!r}")
    if start_on not in (None, "human"):
        raise ValueError(f"start_on must be None or 'human', got {start_on!r}")
    if not isinstance(keep_alternation, bool):
        raise ValueError(f"keep_alternation must be True or False, got {keep_alternation!r}")
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
        return _Plan(messages, [True] * len(messages), [], max_tokens - verbatim_tokens, query or "", start_on, False)
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
    return _Plan(messages, verbatim, parts, max_tokens - verbatim_tokens, query, start_on, keep_alternation)


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


def _contents(plan: _Plan, texts: list[str]) -> list[str | list[Any] | None]:
    """The new content of each message given the kept text of each part; ``None`` for a message that goes
    (older, had text, nothing left, and no tool structure to keep)."""
    new_text: dict[tuple[int, int | None], str] = {
        (part.message, part.block): text for part, text in zip(plan.parts, texts)
    }
    contents: list[str | list[Any] | None] = []
    for i, message in enumerate(plan.messages):
        if plan.verbatim[i]:
            contents.append(message.content)
            continue
        had_text = any(p.text.strip() for p in _text_parts(i, message))
        content = _compressed_content(i, message.content, new_text)
        contents.append(None if had_text and not content and not _keeps_structure(message) else content)
    return contents


def _assemble(plan: _Plan, texts: list[str]) -> list[BaseMessage]:
    contents = _contents(plan, texts)
    if plan.keep_alternation and (gaps := _alternation_gaps(plan.messages, contents)):
        logger.warning(
            "cprs: no budget left to keep a unit of message(s) %s: two messages of one role are now side by side "
            "(raise max_tokens or lower keep_last_turns)",
            ", ".join(f"#{gap[0]}" if len(gap) == 1 else f"one of #{gap}" for gap in gaps),
        )
    out = []
    for i, message in enumerate(plan.messages):
        if plan.verbatim[i]:
            out.append(_copy(message))
        elif contents[i] is not None:
            out.append(_copy(message, content=contents[i]))
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
