"""CompressionOptions: the one declaration of every compression option (name, type, default, doc, check).

The engine (``compress`` / ``select`` / ``score``), every adapter, the command line and the server's request schema
are built from this model: an option is added here and nowhere else (plus, where it has one, the CLI flag that
names it). A framework that dictates another default (the LlamaIndex memory block counts with ``cl100k_base``
because LlamaIndex's ``Memory`` does) overrides that default where the adapter builds its options, with the reason.

Budget rule: in ``budget`` mode exactly one of ``target_ratio`` and ``target_tokens`` holds; when neither is given,
``target_ratio`` is :data:`DEFAULT_TARGET_RATIO` (0.2, 5x compression). ``tags`` mode has no budget. When options
are overridden (:meth:`CompressionOptions.merged`), a new budget (or ``mode``) replaces the old budget whole, so
``merged(target_tokens=100)`` on options with a ratio is not a conflict.

No torch here.

Examples:
    >>> options = CompressionOptions(target_ratio=0.1)
    >>> options.granularity, options.target_ratio
    ('sentence', 0.1)
    >>> options.merged(target_tokens=300).target_ratio is None
    True
    >>> CompressionOptions().target_ratio  # the default budget
    0.2
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator
from pydantic.fields import FieldInfo

#: Share of tokens kept in budget mode when neither ``target_ratio`` nor ``target_tokens`` is given (5x smaller).
DEFAULT_TARGET_RATIO = 0.2
#: Default weight of BM25 next to the critic (chosen on the HotpotQA dev split; see ``engine/lexical.py``).
DEFAULT_LEXICAL_WEIGHT = 0.5
#: Most critic passes one call may ask for (``hops``; see ``engine/multi_hop.py``).
MAX_HOPS = 4
Granularity = Literal["token", "sentence", "paragraph", "chunk"]
Mode = Literal["budget", "tags"]
Language = Literal["en", "zh"]
CoarseFilter = Literal["auto", "off"]
GRANULARITIES: tuple[str, ...] = get_args(Granularity)
LANGUAGES: tuple[str, ...] = get_args(Language)
_BUDGET_FIELDS = ("target_ratio", "target_tokens")


class CompressionOptions(BaseModel):
    """How texts are compressed: unit, mode, budget, ranking and output. Frozen and validated on construction.

    Every field is keyword-only; invalid values raise ``ValueError`` (a pydantic ``ValidationError``) naming the
    field, the value and what is allowed. Numpy scalars of the right kind (``np.float32`` ratios, ``np.int64``
    token counts) are accepted; strings and booleans are not numbers here.

    Examples:
        >>> CompressionOptions(granularity="paragraph", target_tokens=500).target_tokens
        500
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True, validate_default=True)

    granularity: Granularity = Field(
        default="sentence",
        description="Unit of selection: token (keywords), sentence, paragraph or chunk.",
    )
    mode: Mode = Field(
        default="budget",
        description="budget: keep the best units under a token budget; tags: the official argmax tags, no budget.",
    )
    target_ratio: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description=f"Budget mode: share of tokens kept, in (0, 1] (0.1 = 10x compression); {DEFAULT_TARGET_RATIO} "
        "when neither target_ratio nor target_tokens is given. 1.0 returns the texts whole.",
    )
    target_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Budget mode: keep at most this many tokens (exclusive with target_ratio).",
    )
    per_text_budget: bool = Field(
        default=False,
        strict=True,
        description="Apply the budget to each text separately instead of once across all texts of the call.",
    )
    score_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Relevance floor: keep a unit only if its keep-probability reaches this, even when budget is "
        "left (the budget is the ceiling, the threshold the floor; the threshold wins). None: no floor.",
    )
    instruction: str | None = Field(
        default=None,
        description="Free-text instruction for the critic; None uses the template of the granularity.",
    )
    language: Language = Field(
        default="en",
        description="Language of the instruction template (en or zh); not used when an instruction is given. "
        "The embedded default critic was trained on English only.",
    )
    token_counter: Any = Field(
        default="o200k_base",
        description="How budget tokens are counted: a tiktoken encoding name (o200k_base and cl100k_base work "
        "offline), a tiktoken Encoding, an HF tokenizer or a callable str -> int.",
    )
    separator: str = Field(
        default=" ... ",
        strict=True,
        description="Written between kept slices that are not adjacent in the input (its tokens count against the "
        "budget only where it is written).",
    )
    lexical_weight: float = Field(
        default=DEFAULT_LEXICAL_WEIGHT,
        ge=0.0,
        allow_inf_nan=False,
        description="Budget mode at sentence / paragraph / chunk granularity: weight of BM25 next to the critic "
        "when ranking units (z-score fusion); 0 ranks by the critic alone.",
    )
    coarse_filter: CoarseFilter = Field(
        default="auto",
        description="Budget mode: auto ranks the windows of a long input cheaply (BM25 + static embeddings, exact "
        "matches, chased references) and the critic scores only the best, a multiple of what the budget can fill "
        "(from 32K critic tokens on; see engine/coarse.py); off: the critic scores every window.",
    )
    hops: int = Field(
        default=1,
        ge=1,
        le=MAX_HOPS,
        description=f"Budget mode: critic passes. 1 reads the query alone; each further pass (multi-hop, at most "
        f"{MAX_HOPS}) "
        "puts the best units found so far next to the query and rescores only the windows holding kept units or a "
        "key term of those units, so a fact can pull in the fact it refers to in another window (see "
        "engine/multi_hop.py).",
    )
    chunk_tokens: int = Field(default=128, ge=1, description="Size of chunk units, in critic tokens.")
    min_span_tokens: int = Field(
        default=4, ge=0, description="Tags mode: drop spans of at most this many tokens (official default 4)."
    )
    gap_fill_tokens: int = Field(
        default=20, ge=1, description="Tags mode: fill O-gaps shorter than this after a B (official default 20)."
    )

    @field_validator(
        "target_ratio",
        "score_threshold",
        "lexical_weight",
        "target_tokens",
        "chunk_tokens",
        "min_span_tokens",
        "gap_fill_tokens",
        "hops",
        mode="before",
    )
    @classmethod
    def _plain_number(cls, value: Any, info: Any) -> Any:
        if value is None:
            return value
        integral = info.field_name in ("target_tokens", "chunk_tokens", "min_span_tokens", "gap_fill_tokens", "hops")
        allowed = (int, np.integer) if integral else (int, float, np.integer, np.floating)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, allowed):
            kind = "an integer" if integral else "a number"
            raise ValueError(f"{info.field_name} must be {kind}, got {value!r} ({type(value).__name__})")
        return int(value) if integral else float(value)

    @field_validator("instruction")
    @classmethod
    def _non_empty_instruction(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("instruction must be a non-empty string or None")
        return value

    @field_validator("token_counter")
    @classmethod
    def _counter_kind(cls, value: Any) -> Any:
        if not (isinstance(value, str) or callable(value) or hasattr(value, "encode")):
            raise ValueError(
                "token_counter must be a tiktoken encoding name, a tiktoken Encoding, an HF tokenizer or a "
                f"callable str -> int, got {type(value).__name__}"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_budget(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and data.get("mode", "budget") == "budget"
            and data.get("target_ratio") is None
            and data.get("target_tokens") is None
        ):
            data = {**data, "target_ratio": DEFAULT_TARGET_RATIO}
        return data

    @model_validator(mode="after")
    def _budget_fits_mode(self) -> CompressionOptions:
        if self.mode == "tags":
            if self.target_ratio is not None or self.target_tokens is not None:
                raise ValueError(
                    "mode='tags' keeps what the critic tags and has no budget; got "
                    f"target_ratio={self.target_ratio!r}, target_tokens={self.target_tokens!r}: drop them or use "
                    "mode='budget'"
                )
            if self.score_threshold is not None or self.per_text_budget or self.hops > 1:
                raise ValueError(
                    "score_threshold, per_text_budget and hops apply to mode='budget'; mode='tags' keeps what the "
                    f"critic tags (got score_threshold={self.score_threshold!r}, per_text_budget="
                    f"{self.per_text_budget!r}, hops={self.hops!r})"
                )
        elif self.target_ratio is not None and self.target_tokens is not None:
            raise ValueError(
                f"give one budget, target_ratio or target_tokens, not both (got {self.target_ratio!r} and "
                f"{self.target_tokens!r})"
            )
        if self.instruction is not None and self.language != "en":
            warnings.warn(
                f"language={self.language!r} is not used when an instruction is given", UserWarning, stacklevel=2
            )
        return self

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise ValueError(describe_errors(error, type(self))) from None

    # ------------------------------------------------------------------------------------------------ building

    @classmethod
    def build(cls, options: CompressionOptions | None = None, **overrides: Any) -> CompressionOptions:
        """``options`` (or the defaults) with ``overrides`` applied, validated.

        Raises:
            TypeError: an override that is not an option (the message lists the options), or ``options`` of
                another type.
            ValueError: an invalid value.
        """
        if options is None:
            options = _DEFAULTS
        elif not isinstance(options, CompressionOptions):
            raise TypeError(f"options must be a CompressionOptions or None, got {type(options).__name__}")
        return options.merged(**overrides) if overrides else options

    @classmethod
    def of(cls, source: Any, fields: tuple[str, ...], **extra: Any) -> CompressionOptions:
        """The options named ``fields`` read from ``source`` (an adapter declaring them), plus ``extra``, checked.

        Raises:
            ValueError: values that do not go together (two budgets, a budget in tags mode).
        """
        return cls(**{name: getattr(source, name) for name in fields}, **extra)

    def merged(self, **overrides: Any) -> CompressionOptions:
        """A copy with ``overrides`` applied and checked; a new budget or mode replaces the whole budget.

        Raises:
            TypeError: an unknown option name.
            ValueError: an invalid value.
        """
        unknown = sorted(set(overrides) - set(type(self).model_fields))
        if unknown:
            raise TypeError(
                f"unknown option(s) {', '.join(map(repr, unknown))}; options are {', '.join(type(self).model_fields)}"
            )
        values = {name: getattr(self, name) for name in type(self).model_fields if name in self.model_fields_set}
        mode_changes = "mode" in overrides and overrides["mode"] != self.mode
        if mode_changes or any(name in overrides for name in _BUDGET_FIELDS):
            for name in _BUDGET_FIELDS:
                values.pop(name, None)
        values.update(overrides)
        return type(self)(**values)

    # ---------------------------------------------------------------------------------------------- derived

    def budgets(self, original_tokens: list[int]) -> list[int]:
        """Token budget of each budget group: one per text with ``per_text_budget``, else one for all texts.

        Args:
            original_tokens: Tokens of each text under the call's counter.
        """
        totals = original_tokens if self.per_text_budget else [sum(original_tokens)]
        if self.target_tokens is not None:
            return [self.target_tokens for _ in totals]
        ratio = float(self.target_ratio if self.target_ratio is not None else DEFAULT_TARGET_RATIO)
        # a hair above the float product, so that 0.29 x 100 gives 29 tokens, not 28
        return [math.floor(ratio * n + 1e-9) for n in totals]


def option_fields_model(name: str, fields: tuple[str, ...], **defaults: Any) -> type[BaseModel]:
    """A pydantic model declaring ``fields`` of :class:`CompressionOptions` (type, default, constraints, docs).

    Adapters inherit it so that each option is declared once, here; an adapter whose framework dictates another
    default passes it in ``defaults`` (and says why where it does). The adapter still builds a
    :class:`CompressionOptions` from its values, which runs the checks across fields (the budget rule).

    Args:
        name: Class name of the model.
        fields: Option names to declare.
        **defaults: Adapter-specific defaults, by option name.

    Raises:
        KeyError: an unknown option name.
    """
    definitions: dict[str, Any] = {}
    for field in fields:
        info = CompressionOptions.model_fields[field]
        override = {"default": defaults[field]} if field in defaults else {}
        definitions[field] = (info.annotation, FieldInfo.merge_field_infos(info, **override))
    unknown = sorted(set(defaults) - set(fields))
    if unknown:
        raise KeyError(f"defaults for options not declared: {unknown}")
    # The same per-field checks as CompressionOptions (numbers that are not bools or strings, ...), not a copy.
    validators = {}
    for validator_name, decorator in CompressionOptions.__pydantic_decorators__.field_validators.items():
        covered = [f for f in decorator.info.fields if f in fields]
        if covered:
            function = decorator.func.__func__
            validators[validator_name] = field_validator(*covered, mode=decorator.info.mode)(classmethod(function))
    return create_model(name, __validators__=validators, **definitions)


#: What a document adapter (compressor, postprocessor, retriever) exposes; the per-text budget is named by the
#: adapter in its framework's words (``per_document_budget``, ``per_node_budget``).
DOCUMENT_ADAPTER_FIELDS = (
    "granularity",
    "mode",
    "target_ratio",
    "target_tokens",
    "score_threshold",
    "instruction",
    "language",
    "token_counter",
    "separator",
    "lexical_weight",
    "coarse_filter",
    "hops",
)
#: What a memory adapter exposes: its budget is a token limit of its own (``max_tokens``), always budget mode.
MEMORY_ADAPTER_FIELDS = (
    "granularity",
    "score_threshold",
    "instruction",
    "language",
    "token_counter",
    "separator",
    "lexical_weight",
    "coarse_filter",
    "hops",
)


def describe_errors(error: ValidationError, model: type[BaseModel]) -> str:
    """One line per invalid option: the field, the problem, the value given and what the field allows."""
    lines = []
    for detail in error.errors():
        loc = detail.get("loc", ())
        name = str(loc[0]) if loc else ""
        field = model.model_fields.get(name)
        message = detail.get("msg", "invalid").removeprefix("Value error, ")
        given = f" (got {detail['input']!r})" if "input" in detail and name and "got " not in message else ""
        allowed = f"; {name}: {field.description}" if field is not None and field.description else ""
        lines.append(f"{name or 'options'}: {message}{given}{allowed}")
    return "invalid compression options: " + " | ".join(lines)


_DEFAULTS = CompressionOptions()
