"""Unit boundaries on the cases of issue 10 §2: abbreviations, scripts, lines, words without spaces, Markdown."""

from __future__ import annotations

import numpy as np
import pytest

from cprs_integrations.engine import segment


def pieces(text: str, spans: np.ndarray) -> list[str]:
    return [text[s:e] for s, e in spans.tolist()]


# (text, expected sentences). Names and facts are made up.
ABBREVIATIONS_AND_NUMBERS = [
    (
        "The depot holds approx. 40 trucks in winter. Drivers rest there.",
        ["The depot holds approx. 40 trucks in winter.", "Drivers rest there."],
    ),
    (
        "We had approx. 40 Trucks. They were red.",
        ["We had approx. 40 Trucks.", "They were red."],
    ),
    (
        "Results are shown in Fig. 2 and the table. The trend is clear.",
        ["Results are shown in Fig. 2 and the table.", "The trend is clear."],
    ),
    ("As Fig. 2 Shows, it works. Good.", ["As Fig. 2 Shows, it works.", "Good."]),
    (
        "The meeting was held on Jan. 5 in the north hall. Nobody came.",
        ["The meeting was held on Jan. 5 in the north hall.", "Nobody came."],
    ),
    (
        "See vol. 12 of the series for details. It sold well.",
        ["See vol. 12 of the series for details.", "It sold well."],
    ),
    ("Vol. 12 Covers the delta. It sold well.", ["Vol. 12 Covers the delta.", "It sold well."]),
    (
        "The proof is on pp. 45-52 of the report. It is short.",
        ["The proof is on pp. 45-52 of the report.", "It is short."],
    ),
    ("He met Dr. Velk and Mr. Orun. They talked.", ["He met Dr. Velk and Mr. Orun.", "They talked."]),
    ("Dr. Velk came. Then she left.", ["Dr. Velk came.", "Then she left."]),
    ("Ask C. Robert Lane today. He knows.", ["Ask C. Robert Lane today.", "He knows."]),
    ("She ran faster than I. Then we rested.", ["She ran faster than I.", "Then we rested."]),
    ("Values are 3.14 and 2.71. Next.", ["Values are 3.14 and 2.71.", "Next."]),
    ("Use tools, e.g. a hammer or a saw. Then rest.", ["Use tools, e.g. a hammer or a saw.", "Then rest."]),
    # A reference word without a number after it may end a sentence.
    ("The crate was marked Fig. The rest was blank.", ["The crate was marked Fig.", "The rest was blank."]),
    # ICU's abbreviation filter matches its entries ("O.", "T.", "Mr." ...) at the end of longer words: a word is an
    # abbreviation only as a whole ("CEO." ends in "O.", "LCANT." in "T.", "ZMr." in "Mr.").
    ("He was named CEO. The firm grew.", ["He was named CEO.", "The firm grew."]),
    ("We met at MIT. Then we left.", ["We met at MIT.", "Then we left."]),
    ("VAR UWCCT = VAR LCANT. There is a gap.", ["VAR UWCCT = VAR LCANT.", "There is a gap."]),
    ("Ask for ZMr. Then wait.", ["Ask for ZMr.", "Then wait."]),
    # A single capital with a period is an initial unless a word that starts sentences, not names, follows.
    ("I take vitamin C. The doctor agreed.", ["I take vitamin C.", "The doctor agreed."]),
    ("VAR A = VAR B. There it is.", ["VAR A = VAR B.", "There it is."]),
    ("It was John F. Kennedy who spoke. Then he left.", ["It was John F. Kennedy who spoke.", "Then he left."]),
    ("Led by L. A. Hill and others. It grew.", ["Led by L. A. Hill and others.", "It grew."]),
    # ... while whole entries of CLDR's list (not in our own list above) still do not end one.
    ("See the Misc. Items here. Then go.", ["See the Misc. Items here.", "Then go."]),
    ("Take (Alt. Route) home. Then rest.", ["Take (Alt. Route) home.", "Then rest."]),
]

OTHER_SCRIPTS = [
    ("राम घर गया। सीता बाज़ार गई। वे शाम को मिले।", ["राम घर गया।", "सीता बाज़ार गई।", "वे शाम को मिले।"]),
    ("هل ذهبت إلى السوق؟ نعم ذهبت أمس.", ["هل ذهبت إلى السوق؟", "نعم ذهبت أمس."]),
    ("وہ گھر گیا۔ وہ کل واپس آئے گا۔", ["وہ گھر گیا۔", "وہ کل واپس آئے گا۔"]),
    ("Նա տուն գնաց։ Նա վաղը կգա։", ["Նա տուն գնաց։", "Նա վաղը կգա։"]),
    ("እሱ ወደ ቤት ሄደ። ነገ ይመጣል።", ["እሱ ወደ ቤት ሄደ።", "ነገ ይመጣል።"]),
    ("သူ အိမ် ပြန်သွားတယ်။ မနက်ဖြန် လာမယ်။", ["သူ အိမ် ပြန်သွားတယ်။", "မနက်ဖြန် လာမယ်။"]),
    ("គាត់ទៅផ្ទះ។ ថ្ងៃស្អែកគាត់នឹងមក។", ["គាត់ទៅផ្ទះ។", "ថ្ងៃស្អែកគាត់នឹងមក។"]),
    ("今天下雨。明天晴天！好吗？", ["今天下雨。", "明天晴天！", "好吗？"]),
]

LINES = [
    (
        "alpha joined the call\nbeta asked about the deploy\ngamma said it shipped",
        ["alpha joined the call", "beta asked about the deploy", "gamma said it shipped"],
    ),
    (
        "10:02 warn disk at ninety percent\n10:03 info rotated logs\n10:05 error upload failed",
        ["10:02 warn disk at ninety percent", "10:03 info rotated logs", "10:05 error upload failed"],
    ),
    ("milk\neggs\nflour\nsugar", ["milk", "eggs", "flour", "sugar"]),
    ("alpha left.\nbeta joined.\ngamma waved.", ["alpha left.", "beta joined.", "gamma waved."]),
    # A lone CR is a line break.
    ("first line here\rsecond line here\rthird", ["first line here", "second line here", "third"]),
    # Hard-wrapped prose: a line break before a lower-case word continues the sentence.
    (
        "The river rose over\nthe old bridge. Nobody\nwas hurt.\nA new paragraph starts.",
        ["The river rose over\nthe old bridge.", "Nobody\nwas hurt.", "A new paragraph starts."],
    ),
]


@pytest.mark.parametrize(("text", "expected"), ABBREVIATIONS_AND_NUMBERS)
def test_abbreviations_and_numbers_do_not_end_sentences(text, expected):
    assert pieces(text, segment.sentence_spans(text)) == expected


@pytest.mark.parametrize(("text", "expected"), OTHER_SCRIPTS)
def test_sentence_terminators_of_other_scripts(text, expected):
    assert pieces(text, segment.sentence_spans(text)) == expected


@pytest.mark.parametrize(("text", "expected"), LINES)
def test_lines_are_units_without_sentence_punctuation(text, expected):
    assert pieces(text, segment.sentence_spans(text)) == expected


def test_question_mark_before_lower_case_continues_the_sentence():
    text = "It rained. It poured! e.g. the rest? yes\nNew line"
    assert pieces(text, segment.sentence_spans(text)) == ["It rained.", "It poured! e.g. the rest? yes", "New line"]


# ----- words -----

WORDS = [
    ("我们今天去北京看朋友，然后回家。", ["我们", "今天", "去", "北京", "看", "朋友，", "然后", "回家。"]),
    ("ผมชอบกินข้าวผัดมาก", ["ผม", "ชอบ", "กิน", "ข้าว", "ผัด", "มาก"]),
    ("东京和“北京”是城市。", ["东京", "和", "“北京”", "是", "城市。"]),
    ("iPhone的价格很高", ["iPhone", "的", "价格", "很高"]),
    ("Hello, state-of-the-art world (really)!", ["Hello,", "state-of-the-art", "world", "(really)!"]),
]


@pytest.mark.parametrize(("text", "expected"), WORDS)
def test_words_in_scripts_without_spaces(text, expected):
    assert pieces(text, segment.word_spans(text)) == expected
    assert pieces(text, segment.units_for("token", text, np.zeros((0, 2), dtype=np.int64), 10)) == expected


def test_words_and_clauses_inside_a_range():
    text = "Skip this. Then, at noon, we left; the rest stayed."
    s, e = segment.sentence_spans(text)[1].tolist()
    assert pieces(text, segment.clause_spans(text, s, e)) == ["Then,", "at noon,", "we left;", "the rest stayed."]
    assert pieces(text, segment.word_spans(text, s, s + 14)) == ["Then,", "at", "noon,"]
    assert segment.word_spans(text, 5, 5).shape == (0, 2)
    chinese = "他说：我们明天去，好吗？"
    assert pieces(chinese, segment.clause_spans(chinese)) == ["他说：", "我们明天去，", "好吗？"]
    arabic = "ذهبنا إلى السوق، ثم عدنا"
    assert pieces(arabic, segment.clause_spans(arabic)) == ["ذهبنا إلى السوق،", "ثم عدنا"]


# ----- long units -----


def test_long_sentences_are_cut_at_clauses_then_words():
    clause = "the valve on the third pump opened slowly"
    text = ", ".join([clause] * 60) + "."
    spans = segment.sentence_spans(text)
    assert len(spans) > 1
    assert all(e - s <= segment.MAX_SENTENCE_CHARS for s, e in spans.tolist())
    assert all(text[e - 1] in ",." for s, e in spans.tolist())  # cut right after clause marks
    words = " ".join(["pump"] * 800)
    assert all(e - s <= 300 for s, e in segment.sentence_spans(words, max_chars=300).tolist())
    assert all(words[s:e].split() == ["pump"] * len(words[s:e].split()) for s, e in segment.sentence_spans(words))


def test_long_cjk_paragraph_is_cut_at_ideographic_commas():
    text = "，".join(["我们明天去北京看朋友"] * 100) + "。"
    spans = segment.sentence_spans(text)
    assert len(spans) > 1
    assert all(3 * (e - s) <= segment.MAX_SENTENCE_CHARS for s, e in spans.tolist())  # non-ASCII counts 3
    assert all(text[e - 1] in "，。" for s, e in spans.tolist())


def test_unpunctuated_text_without_lines_is_cut_by_length_at_words():
    text = " ".join(f"item{i}" for i in range(1000))
    spans = segment.sentence_spans(text)
    assert all(e - s <= segment.MAX_SENTENCE_CHARS for s, e in spans.tolist())
    assert " ".join(pieces(text, spans)) == text


# ----- line endings -----


def test_crlf_cr_and_lf_give_the_same_units():
    base = "# Notes\n\nThe pump\nfailed. Nobody came.\n\n- one. two\n- three\n\nalpha left\nbeta came\n"
    expected = pieces(base, segment.sentence_spans(base))
    for variant in (base.replace("\n", "\r\n"), base.replace("\n", "\r")):
        got = [p.replace("\r\n", "\n").replace("\r", "\n") for p in pieces(variant, segment.sentence_spans(variant))]
        assert got == expected
        assert len(segment.paragraph_spans(variant)) == len(segment.paragraph_spans(base))


# ----- Markdown -----

MARKDOWN = """# Field notes

See [the report. Part 2](http://example.org/r.v2.html) and ![Figure 1. The pump](img/pump.v1.png) first. \
Run `make test. Now` after. Then stop.

| Pump | State. Note |
|------|-------------|
| P1. North | Open. Dry |
| P2 | closed |

- First item. It has two sentences.
  - Nested item. Also two.
- Last item

```python
x = 1. y
print(x)
```

## Second part

Setext title
------------

> Quoted line. Another one.
"""


def test_markdown_links_images_code_are_never_split():
    units = pieces(MARKDOWN, segment.sentence_spans(MARKDOWN))
    assert (
        "See [the report. Part 2](http://example.org/r.v2.html) and ![Figure 1. The pump](img/pump.v1.png) first."
        in units
    )
    assert "Run `make test. Now` after." in units
    assert "Then stop." in units


def test_markdown_block_units():
    units = pieces(MARKDOWN, segment.sentence_spans(MARKDOWN))
    assert units[0] == "# Field notes"
    assert "| Pump | State. Note |\n|------|-------------|" in units  # header row with its delimiter row
    assert "| P1. North | Open. Dry |" in units
    assert "| P2 | closed |" in units
    assert "- First item. It has two sentences." in units
    assert "- Nested item. Also two." in units
    assert "- Last item" in units
    fence = units.index("```python")
    assert units[fence : fence + 4] == ["```python", "x = 1. y", "print(x)", "```"]
    assert "## Second part" in units
    assert "Setext title\n------------" in units
    assert "> Quoted line." in units and "Another one." in units


def test_a_list_item_too_long_for_one_unit_is_split_into_sentences():
    sentence = "The north pump ran dry at noon and the crew stopped the line."
    text = "# Log\n\n- " + " ".join([sentence] * 30) + "\n- Short item. Two.\n"
    units = pieces(text, segment.sentence_spans(text))
    assert units[1] == "- " + sentence
    assert units[2:31] == [sentence] * 29
    assert units[31:] == ["- Short item. Two."]


def test_markdown_headings_and_sections():
    headings = segment.markdown_headings(MARKDOWN)
    assert pieces(MARKDOWN, headings.spans) == ["# Field notes", "## Second part", "Setext title\n------------"]
    assert headings.levels.tolist() == [1, 2, 2]
    assert headings.parents.tolist() == [-1, 0, 0]
    assert np.array_equal(segment.heading_spans(MARKDOWN), headings.spans)
    units = segment.sentence_spans(MARKDOWN)
    owner = segment.heading_of(MARKDOWN, units)
    text_of = dict(zip(pieces(MARKDOWN, units), owner.tolist()))
    assert text_of["# Field notes"] == 0 and text_of["Then stop."] == 0 and text_of["- Last item"] == 0
    assert text_of["## Second part"] == 1
    assert text_of["Another one."] == 2
    assert segment.heading_of("No headings here. None.", np.array([[0, 17]])).tolist() == [-1]


def test_markdown_paragraphs_keep_code_blocks_and_split_headings():
    text = "# Title\nIntro line.\n\n```\na = 1\n\nb = 2\n```\n\nEnd."
    assert pieces(text, segment.paragraph_spans(text)) == ["# Title", "Intro line.", "```\na = 1\n\nb = 2\n```", "End."]


def test_plain_prose_is_not_markdown():
    prose = "The pump failed at 3 p.m. on Friday. Nobody saw it (we were out).\n\n- Then it rained."
    assert not segment.looks_like_markdown(prose)
    assert segment.heading_spans(prose).shape == (0, 2)
    assert segment.looks_like_markdown("# Title\n\nBody.")
    assert segment.looks_like_markdown("Read [this](http://a.b/c) first.")


def test_markdown_words_keep_links_whole():
    text = "Read [the full report](http://a.b/c.html) and `run it` now."
    assert pieces(text, segment.word_spans(text)) == [
        "Read",
        "[the full report](http://a.b/c.html)",
        "and",
        "`run it`",
        "now.",
    ]
