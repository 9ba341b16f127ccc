"""Training and dev tasks where the critic lost on unseen evaluations (issue 14): paraphrased questions with
distractors, variable chains with a decoy chain spread across windows, and second-hop (multi-hop) examples whose
query carries the evidence a first pass found (:func:`~cprs_integrations.engine.prompts.hop_query`).

Our own generator, names, relations and text: the haystack is the essay text of ``synthetic.py`` (training filler,
never shipped); HotpotQA second-hop examples use the **train** split only. Every task takes a ``split``: ``train``
and ``dev`` draw from disjoint question phrasings (the last phrasing of each relation is dev-only) and disjoint
name syllables, so the dev sets measure paraphrases the critic never saw. Chains have no phrasing to hold out: their
names and values are random, and the dev set differs by seed (and haystack).

Examples:
    >>> import random
    >>> ex = paraphrase_example(random.Random(0), "A b. C d. E f. " * 40, split="dev")
    >>> ex.text[ex.keep[0][0] : ex.keep[0][1]] in ex.meta["facts"]
    True
"""

from __future__ import annotations

import random
from typing import Any

from cprs_integrations.engine.prompts import hop_query
from cprs_integrations.training.data import Example, hotpot_example, pick_instruction
from cprs_integrations.training.synthetic import chain_statements, essay_haystack, insert_sentences, variable_names

SPLITS = ("train", "dev")

#: (statements of the fact, questions that paraphrase it with few shared words, values). The last question of each
#: relation is used only by the dev split.
RELATIONS: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (
        ("{p} was born in {v}.", "{p} came into the world in {v}.", "{v} is the birthplace of {p}."),
        ("Where is {p} from originally?", "In which place did {p}'s life begin?", "What is {p}'s hometown?"),
        ("Tarbes", "Elverum", "Dunmore", "Lindau", "Carrick", "Oakhaven", "Verona", "Kilkenny", "Tromso", "Ghent"),
    ),
    (
        ("{p} works as a {v}.", "{p} earns a living as a {v}.", "By trade, {p} is a {v}."),
        ("What does {p} do for a job?", "How does {p} make money?", "What is {p}'s profession?"),
        ("surveyor", "glassblower", "locksmith", "cartographer", "beekeeper", "pharmacist", "welder", "librarian"),
    ),
    (
        ("{p} is married to {v}.", "{p}'s wife is {v}.", "{v} and {p} wed years ago."),
        ("Who is {p}'s spouse?", "Whom did {p} marry?", "Who is the partner of {p} in marriage?"),
        ("Ilse Marten", "Noor Haddad", "Petra Holm", "Greta Voss", "Amara Bell", "Lena Fisk", "Rosa Alba"),
    ),
    (
        ("{p} keeps a pet {v}.", "{p} owns a {v} as a pet.", "A {v} lives with {p} at home."),
        ("Which animal does {p} look after?", "What creature shares a home with {p}?", "What is {p}'s pet?"),
        ("tortoise", "ferret", "parrot", "iguana", "greyhound", "goldfish", "rabbit", "canary", "hamster"),
    ),
    (
        ("{p}'s favourite instrument is the {v}.", "{p} loves playing the {v}.", "{p} plays the {v} every evening."),
        ("Which musical instrument does {p} prefer?", "What does {p} like to play?", "What does {p} enjoy playing?"),
        ("cello", "oboe", "banjo", "harp", "trombone", "viola", "clarinet", "accordion", "bassoon"),
    ),
    (
        ("{p} studied {v} at university.", "{p} holds a degree in {v}.", "{p} graduated in {v}."),
        ("What subject did {p} major in?", "What was {p}'s field in college?", "Which discipline did {p} learn?"),
        ("geology", "linguistics", "chemistry", "architecture", "economics", "botany", "astronomy", "law"),
    ),
    (
        ("{p} drives a {v}.", "{p}'s car is a {v}.", "Every morning {p} takes the {v} to work."),
        ("Which vehicle does {p} own?", "What does {p} get around in?", "What automobile belongs to {p}?"),
        ("red Volvo", "green Fiat", "blue Skoda", "white Saab", "black Mazda", "grey Lancia", "silver Opel"),
    ),
    (
        ("{p} is allergic to {v}.", "{v} gives {p} a rash.", "{p} must avoid {v} because of an allergy."),
        ("What can {p} not tolerate?", "What triggers a reaction in {p}?", "What is {p} sensitive to?"),
        ("peanuts", "penicillin", "cats", "pollen", "shellfish", "latex", "wasps", "strawberries"),
    ),
    (
        ("{p} lives on {v}.", "{p}'s house stands on {v}.", "The address of {p} is on {v}."),
        ("On which street does {p} reside?", "Where is {p}'s home located?", "What road is {p}'s residence on?"),
        ("Elm Street", "Harbour Road", "Mill Lane", "Castle Hill", "Quarry Row", "Station Avenue", "Bell Court"),
    ),
    (
        ("{p} speaks {v} fluently.", "{p} is a native speaker of {v}.", "{p} grew up speaking {v}."),
        ("What language is {p} comfortable in?", "In which tongue does {p} converse best?", "What does {p} talk?"),
        ("Estonian", "Catalan", "Tagalog", "Welsh", "Basque", "Icelandic", "Swahili", "Maltese", "Finnish"),
    ),
    (
        ("{p} supports {v}.", "{p} is a lifelong fan of {v}.", "{p} never misses a match of {v}."),
        ("Which team does {p} cheer for?", "What club has {p}'s loyalty?", "Whose games does {p} follow?"),
        ("Rovers FC", "the Harriers", "Athletic Club", "the Comets", "United Stars", "the Pilgrims", "Olympia"),
    ),
    (
        ("{p} was trained by {v}.", "{v} mentored {p}.", "{p} learned the craft from {v}."),
        ("Who taught {p}?", "Under whose guidance did {p} learn?", "Who was {p}'s teacher?"),
        ("Ada Norquist", "Bram Keller", "Celia Dunn", "Ewan Roth", "Farah Lyle", "Gil Ostrow", "Hana Pike"),
    ),
    (
        ("{p} weighs {v} kilograms.", "The mass of {p} is {v} kilograms.", "{p} tips the scales at {v} kilograms."),
        ("How heavy is {p}?", "What does {p} weigh?", "How much mass does {p} have?"),
        ("62", "75", "81", "93", "104", "58", "67", "88"),
    ),
    (
        ("{p} retired in {v}.", "{p} stopped working in {v}.", "In {v}, {p} left the workforce for good."),
        ("When did {p}'s career end?", "In what year did {p} give up work?", "When did {p} stop their job?"),
        ("1998", "2003", "2011", "1987", "2015", "1994", "2008", "2019"),
    ),
)

_SYLLABLES = {
    "train": ("ka", "lo", "mi", "ren", "tor", "vi", "sa", "del", "mar", "no", "bel", "fi", "gan", "hu", "jor"),
    "dev": ("za", "qu", "pel", "dri", "wen", "os", "ty", "ix", "bro", "lum", "ser", "cav", "nud", "yel", "ef"),
}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def person_name(rng: random.Random, split: str = "train") -> str:
    """A made-up ``First Last`` name from the split's syllables."""
    _check_split(split)
    syllables = _SYLLABLES[split]

    def word(n: int) -> str:
        return "".join(rng.choice(syllables) for _ in range(n)).capitalize()

    return f"{word(2)} {word(rng.choice((2, 3)))}"


def _question(rng: random.Random, questions: tuple[str, ...], split: str) -> str:
    return questions[-1] if split == "dev" else rng.choice(questions[:-1])


def paraphrase_example(
    rng: random.Random, haystack: str, split: str = "train", n_same_person: int = 3, n_same_relation: int = 2
) -> Example:
    """A fact about a person asked with a paraphrase; distractors: the person's other relations and other people
    with the same relation (other values), all inserted at random sentence starts of ``haystack``.

    Args:
        rng: Randomness.
        haystack: Filler text.
        split: ``train`` or ``dev`` (question phrasings and names of the split).
        n_same_person: Other relations of the same person.
        n_same_relation: Other people with the asked relation.

    Returns:
        An example whose keep span is the true fact (sentence granularity); ``meta["facts"]`` holds every inserted
        sentence, the true one first.
    """
    _check_split(split)
    relations = rng.sample(range(len(RELATIONS)), 1 + n_same_person)
    statements, questions, values = RELATIONS[relations[0]]
    person = person_name(rng, split)
    others = [person_name(rng, split) for _ in range(n_same_relation)]
    asked_values = rng.sample(values, 1 + n_same_relation)
    facts = [rng.choice(statements).format(p=person, v=asked_values[0])]
    facts += [rng.choice(statements).format(p=o, v=v) for o, v in zip(others, asked_values[1:])]
    for r in relations[1:]:
        other_statements, _, other_values = RELATIONS[r]
        facts.append(rng.choice(other_statements).format(p=person, v=rng.choice(other_values)))
    text, spans = insert_sentences(haystack, facts, rng)
    return Example(
        query=_question(rng, questions, split).format(p=person),
        instruction=pick_instruction("sentence", rng),
        granularity="sentence",
        text=text,
        keep=(spans[0],),
        task="paraphrase",
        meta={"facts": facts, "fact_spans": spans, "person": person},
    )


def decoy_chain_example(
    rng: random.Random, haystack: str, num_hops: int = 4, evidence_links: int = 0, depths: list[float] | None = None
) -> Example:
    """RULER variable tracking with a decoy: the true chain ``VAR A = v, VAR B = VAR A, ...`` and a decoy chain of the
    same shape ending in another value, interleaved at random depths of ``haystack``; keep the true chain.

    Args:
        rng: Randomness.
        haystack: Filler text (long enough that the links fall in different windows).
        num_hops: Assignments after the first, per chain.
        evidence_links: With ``k > 0``, a second-hop example: the query carries what an earlier pass would have
            found: the true chain's first statement (it holds the asked value), ``k - 1`` other true links and up to
            two links of the decoy chain, shuffled; the label stays the whole true chain, so the critic learns to
            follow the names that lead back to the asked value.
        depths: Insertion depths in [0, 1] of the ``2 * (num_hops + 1)`` statements (true chain first), else random.
    """
    names = variable_names(rng, 2 * (num_hops + 1))
    value, decoy_value = (str(v) for v in rng.sample(range(10000, 99999), 2))
    chains = [chain_statements(names[: num_hops + 1], value), chain_statements(names[num_hops + 1 :], decoy_value)]
    statements = chains[0] + chains[1]
    if depths is None:
        true_depths = sorted(rng.random() for _ in chains[0])
        decoy_depths = sorted(rng.random() for _ in chains[1])
        depths = true_depths + decoy_depths
    text, spans = insert_sentences(haystack, statements, rng, depths)
    query = f"Find all variables that are assigned the value {value} in the text above."
    evidence: list[str] = []
    if evidence_links:
        evidence = [chains[0][0], *rng.sample(chains[0][1:], min(num_hops, evidence_links - 1))]
        evidence += rng.sample(chains[1], rng.randint(0, min(2, len(chains[1]))))
        rng.shuffle(evidence)
        query = hop_query(query, evidence)
    return Example(
        query=query,
        instruction=pick_instruction("sentence", rng),
        granularity="sentence",
        text=text,
        keep=tuple(sorted(spans[: num_hops + 1])),
        task="decoy-chain" + ("-hop" if evidence_links else ""),
        meta={"value": value, "decoy_value": decoy_value, "chain": chains[0], "decoy": chains[1], "spans": spans},
    )


def hotpot_hop_example(record: dict[str, Any], rng: random.Random, noise: float = 0.2) -> Example:
    """A HotpotQA second-hop example: the query carries the supporting facts of one gold paragraph (what a first
    pass finds for a bridge question), or with probability ``noise`` one non-gold sentence beside them (first passes
    err); the label stays all supporting facts, so the critic learns to pull in the fact the evidence points to."""
    base = hotpot_example(record, "sentence", rng)
    context = dict(record["context"])
    by_title: dict[str, list[str]] = {}
    for title, index in record["supporting_facts"]:
        sentences = context.get(title, [])
        if index < len(sentences) and sentences[index].strip():
            by_title.setdefault(title, []).append(sentences[index].strip())
    if not by_title:
        return base
    evidence = list(by_title[rng.choice(sorted(by_title))])
    if rng.random() < noise:
        pool = [s.strip() for t, ss in record["context"] for s in ss if t not in by_title and s.strip()]
        if pool:
            evidence.append(rng.choice(pool))
            rng.shuffle(evidence)
    return Example(
        query=hop_query(base.query, evidence),
        instruction=base.instruction,
        granularity="sentence",
        text=base.text,
        keep=base.keep,
        task="hotpotqa-hop",
        meta=base.meta,
    )


def hard_examples(rng: random.Random, count: int, split: str = "train") -> list[Example]:
    """A training mix of the hard kinds: 50% paraphrased facts with distractors (1K-6K characters of essays),
    50% decoy chains over 3K-12K characters (half of them second-hop examples with 1-4 true links as evidence)."""
    examples: list[Example] = []
    for _ in range(count):
        if rng.random() < 0.5:
            examples.append(paraphrase_example(rng, essay_haystack(rng, rng.randint(1000, 6000)), split))
        else:
            links = rng.choice((1, 2, 3, 4)) if rng.random() < 0.5 else 0
            haystack = essay_haystack(rng, rng.randint(3000, 12000))
            examples.append(decoy_chain_example(rng, haystack, evidence_links=links))
    return examples
