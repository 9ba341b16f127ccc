"""CPRS agent middleware in real LangChain 1.x agent loops (``create_agent``), with a scripted chat model, a real
tool and the tiny critic: what the model actually received, what the agent stored, and that the loop completes."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

pytest.importorskip("langchain.agents", reason="the agent middleware needs langchain>=1.0")

from langchain.agents import create_agent
from langchain.agents.middleware import ToolErrorMiddleware
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import tool
from pydantic import Field

from cprs_integrations.langchain import (
    CPRSMessagePruner,
    CPRSPruningMiddleware,
    CPRSToolOutputCompressor,
    prune_messages,
)
from tests.integration.test_langchain import (
    SEPARATOR,
    chat_history,
    count_tokens,
    message_tokens,
    same_role_neighbours,
    text_parts,
)

SYSTEM_PROMPT = "You are a helpful research assistant."
QUESTION = "What does the essay say about talking to corp dev?"


def essay_page(part: int) -> str:
    from cprs_integrations.training.data import essay_text

    return essay_text()[4000 + part * 1500 : 4000 + (part + 1) * 1500]


@tool
def fetch_page(part: int) -> str:
    """Fetch one page of the essay (about 300 tokens)."""
    return essay_page(part)


@tool
def word_count(text: str) -> str:
    """Count the words of a text."""
    return f"{len(text.split())} words"


class ScriptedChatModel(FakeMessagesListChatModel):
    """Answers with ``responses`` in turn and records the messages each call received; tools bind to itself."""

    received: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.received.append(copy.deepcopy(messages))
        return super()._generate(messages, stop, run_manager, **kwargs)

    def bind_tools(self, tools: Any, *, tool_choice: str | None = None, **kwargs: Any) -> Runnable:
        return self


def call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def scripted_model() -> ScriptedChatModel:
    """First a call of fetch_page, then the final answer."""
    return ScriptedChatModel(
        responses=[
            AIMessage("", tool_calls=[call("fetch_page", {"part": 0}, "call-fetch")], id="ai-call"),
            AIMessage("Corp dev wants to buy, not to partner.", id="ai-final"),
        ]
    )


class QuerySpy:
    """A real engine that records the query of each compression."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.queries = engine, []

    def compress(self, query: str, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        self.queries.append(query)
        return self.engine.compress(query, texts, *args, **kwargs)

    async def acompress(self, query: str, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        self.queries.append(query)
        return await self.engine.acompress(query, texts, *args, **kwargs)


def conversation() -> list[BaseMessage]:
    """A long earlier conversation (no system message: the agent has its own) and the new question."""
    return [*chat_history()[1:], HumanMessage(QUESTION, id="question")]


def assert_paired_tool_calls(messages: list[BaseMessage]) -> None:
    calls = {c["id"] for m in messages if isinstance(m, AIMessage) for c in m.tool_calls}
    results = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    assert calls == results


# ------------------------------------------------------------------------------------------------- pruning


@pytest.mark.parametrize("run", ["sync", "async"])
async def test_pruning_middleware_prunes_each_model_request_not_the_state(tiny_engine, run) -> None:
    messages = conversation()
    before = copy.deepcopy(messages)
    # The last turn (question, tool call, tool result) stays verbatim; the older turns get 150 tokens.
    last_turn = count_tokens(SYSTEM_PROMPT) + count_tokens(QUESTION) + count_tokens(essay_page(0))
    max_tokens = last_turn + 150
    model = scripted_model()
    middleware = CPRSPruningMiddleware(engine=tiny_engine, max_tokens=max_tokens)
    agent = create_agent(model, tools=[fetch_page], system_prompt=SYSTEM_PROMPT, middleware=[middleware])

    inputs = {"messages": messages}
    state = agent.invoke(inputs) if run == "sync" else await agent.ainvoke(inputs)

    # The agent completed the loop: tool call, tool result, final answer.
    assert messages == before
    assert state["messages"][-1].content == "Corp dev wants to buy, not to partner."
    assert [type(m) for m in state["messages"][-3:]] == [AIMessage, ToolMessage, AIMessage]
    # The state keeps the whole history: only the requests were pruned.
    assert [m.content for m in state["messages"][: len(messages)]] == [m.content for m in messages]

    assert len(model.received) == 2
    for received in model.received:
        assert received[0] == SystemMessage(SYSTEM_PROMPT)  # sent unchanged, counted in the budget
        assert message_tokens(received) <= max_tokens < message_tokens([SystemMessage(SYSTEM_PROMPT), *messages])
        assert same_role_neighbours(received) == []
        assert_paired_tool_calls(received)
        by_id = {m.id: m for m in messages}
        for message in received[1:]:  # older text is made of slices of the stored messages
            if message.id in by_id:
                original = "".join(text_parts(by_id[message.id]))
                assert all(piece in original for part in text_parts(message) for piece in part.split(SEPARATOR))
    first, second = model.received
    assert first[-1] == messages[-1]  # the question, verbatim
    assert [m.id for m in second[-3:]] == ["question", "ai-call", second[-1].id]
    assert second[-1].content == essay_page(0)  # the last turn's tool result, verbatim
    # The same pruning as prune_messages on what the model would have been sent.
    expected = prune_messages([SystemMessage(SYSTEM_PROMPT), *messages], engine=tiny_engine, max_tokens=max_tokens)
    assert first == expected


def test_pruning_middleware_sends_a_short_history_as_it_is() -> None:
    class NoEngine:
        def compress(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("nothing should be scored")

        async def acompress(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("nothing should be scored")

    model = scripted_model()
    pruner = CPRSMessagePruner(engine=NoEngine(), max_tokens=100_000, keep_last_turns=2)
    agent = create_agent(model, tools=[fetch_page], middleware=[CPRSPruningMiddleware(pruner)])
    state = agent.invoke({"messages": [HumanMessage(QUESTION, id="q")]})
    assert state["messages"][-1].content == "Corp dev wants to buy, not to partner."
    assert model.received[0] == [HumanMessage(QUESTION, id="q")]


def test_pruning_middleware_arguments_are_checked(tiny_engine) -> None:
    with pytest.raises(ValueError, match="top_n"):
        CPRSPruningMiddleware(engine=tiny_engine, max_tokens=100, top_n=2)
    with pytest.raises(ValueError, match="max_tokens"):
        CPRSPruningMiddleware(engine=tiny_engine)
    with pytest.raises(ValueError, match="not both"):
        CPRSPruningMiddleware(CPRSMessagePruner(engine=tiny_engine, max_tokens=100), max_tokens=50)
    with pytest.raises(TypeError, match="CPRSMessagePruner"):
        CPRSPruningMiddleware(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keep_last_turns"):
        CPRSPruningMiddleware(engine=tiny_engine, max_tokens=100, keep_last_turns=-1)


# ------------------------------------------------------------------------------------------ tool outputs


@pytest.mark.parametrize("run", ["sync", "async"])
async def test_tool_output_compressor_compresses_what_the_model_reads(tiny_engine, run) -> None:
    spy = QuerySpy(tiny_engine)
    model = ScriptedChatModel(
        responses=[
            AIMessage(
                "",
                tool_calls=[call("fetch_page", {"part": 1}, "call-fetch"), call("word_count", {"text": "a b"}, "wc")],
                id="ai-call",
            ),
            AIMessage("Done.", id="ai-final"),
        ]
    )
    compressor = CPRSToolOutputCompressor(engine=spy, max_tokens=60, tools=["fetch_page"])
    agent = create_agent(model, tools=[fetch_page, word_count], middleware=[compressor])
    earlier = [HumanMessage("Earlier question.", id="q0"), AIMessage("Earlier answer.")]
    inputs = {"messages": [*earlier, ("user", QUESTION)]}
    state = agent.invoke(inputs) if run == "sync" else await agent.ainvoke(inputs)

    assert state["messages"][-1].content == "Done."
    assert spy.queries == [QUESTION]  # the pending query: the last human message
    received = {m.tool_call_id: m for m in model.received[1] if isinstance(m, ToolMessage)}
    page, count = received["call-fetch"], received["wc"]
    assert (page.name, page.status) == ("fetch_page", "success")
    original = essay_page(1)
    assert count_tokens(original) > 60 >= count_tokens(page.content) > 0
    assert all(piece in original for piece in page.content.split(SEPARATOR))
    figures = page.response_metadata["cprs"]
    assert figures["original_tokens"] == count_tokens(original)
    assert figures["compressed_tokens"] == count_tokens(page.content)
    assert figures["parts"][0]["spans"]
    assert (count.name, count.content, "cprs" not in count.response_metadata) == ("word_count", "2 words", True)
    # As any wrap_tool_call result, the compressed message is what the agent stores.
    stored = next(m for m in state["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == "call-fetch")
    assert stored.content == page.content


def test_tool_output_compressor_with_the_pruner_and_a_fixed_query(tiny_engine, caplog) -> None:
    spy = QuerySpy(tiny_engine)
    model = scripted_model()
    middleware = [
        CPRSToolOutputCompressor(engine=spy, max_tokens=40, query="corp dev acquisitions", granularity="token"),
        CPRSPruningMiddleware(engine=tiny_engine, max_tokens=400),
    ]
    agent = create_agent(model, tools=[fetch_page], system_prompt=SYSTEM_PROMPT, middleware=middleware)
    with caplog.at_level(logging.WARNING, logger="cprs_integrations.langchain.memory"):
        state = agent.invoke({"messages": conversation()})
    assert "no budget left" not in caplog.text
    assert state["messages"][-1].content == "Corp dev wants to buy, not to partner."
    assert spy.queries == ["corp dev acquisitions"]
    tool_result = model.received[1][-1]
    assert isinstance(tool_result, ToolMessage) and tool_result.tool_call_id == "call-fetch"
    assert 0 < count_tokens(tool_result.content) <= 40
    assert tool_result.response_metadata["cprs"]["parts"][0]["granularity"] == "token"
    assert all(message_tokens(received) <= 400 for received in model.received)


def test_tool_output_compressor_leaves_short_error_and_other_results(tiny_engine) -> None:
    class NoEngine:
        def compress(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("nothing should be scored")

        async def acompress(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("nothing should be scored")

    @tool
    def broken(part: int) -> str:
        """Always fails."""
        raise ValueError("the page is gone " * 50)

    model = ScriptedChatModel(
        responses=[
            AIMessage(
                "",
                tool_calls=[
                    call("word_count", {"text": "a b c"}, "short"),
                    call("fetch_page", {"part": 2}, "other"),
                    call("broken", {"part": 0}, "error"),
                ],
            ),
            AIMessage("Done."),
        ]
    )
    compressor = CPRSToolOutputCompressor(engine=NoEngine(), max_tokens=10, tools=[word_count, broken])
    # LangChain's ToolErrorMiddleware, inside, turns the exception into a long error ToolMessage.
    errors = ToolErrorMiddleware(lambda exc, request: str(exc))
    agent = create_agent(model, tools=[fetch_page, word_count, broken], middleware=[compressor, errors])
    state = agent.invoke({"messages": [("user", QUESTION)]})
    results = {m.tool_call_id: m for m in state["messages"] if isinstance(m, ToolMessage)}
    assert results["short"].content == "3 words"
    assert results["other"].content == essay_page(2)
    assert results["error"].status == "error" and count_tokens(results["error"].content) > 10
    assert state["messages"][-1].content == "Done."


def test_tool_output_compressor_arguments_are_checked(tiny_engine) -> None:
    with pytest.raises(ValueError, match="top_n"):
        CPRSToolOutputCompressor(engine=tiny_engine, max_tokens=100, top_n=2)
    with pytest.raises(ValueError, match="max_tokens"):
        CPRSToolOutputCompressor(engine=tiny_engine)
    with pytest.raises(ValueError, match="max_tokens"):
        CPRSToolOutputCompressor(engine=tiny_engine, max_tokens=0)
    with pytest.raises(ValueError, match="lexical_weight"):
        CPRSToolOutputCompressor(engine=tiny_engine, max_tokens=100, lexical_weight=-1)
    with pytest.raises(ValueError, match="query"):
        CPRSToolOutputCompressor(engine=tiny_engine, max_tokens=100, query=" ")
    with pytest.raises(ValueError, match="tools must be a list"):
        CPRSToolOutputCompressor(engine=tiny_engine, max_tokens=100, tools="fetch_page")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CPRSToolOutputCompressor(None, max_tokens=100)  # type: ignore[misc]
