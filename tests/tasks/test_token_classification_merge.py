"""token-classification `merge_adjacent`: same-group entities that touch in the text become one
entity (the embedded PII model's default), exactly sliced from the original text."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sparsepipe import ConfigError, Pipeline
from sparsepipe.tasks.token_classification.postprocess import MERGE_JOINERS, merge_adjacent


def _e(group: str, start: int, end: int, score: float = 0.5, word: str = "?") -> dict:
    return {"entity_group": group, "start": start, "end": end, "score": score, "word": word}


def _spans(text: str, entities: list[dict]) -> list[tuple[str, str]]:
    return [(e["entity_group"], text[e["start"] : e["end"]]) for e in entities]


def test_touching_pieces_become_one_entity_with_the_mean_score():
    text = "mail maria.g@example.org now"
    pieces = [(5, 10), (10, 11), (11, 12), (12, 13), (13, 20), (20, 21), (21, 24)]
    scores = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    ents = [_e("EMAIL", s, t, p) for (s, t), p in zip(pieces, scores)]
    [merged] = merge_adjacent(text, ents)
    assert (merged["start"], merged["end"], merged["word"]) == (5, 24, "maria.g@example.org")
    assert merged["score"] == pytest.approx(sum(scores) / len(scores))
    assert ents[0]["end"] == 10  # the input is left as it was


@pytest.mark.parametrize("joiner", sorted(MERGE_JOINERS))
def test_every_documented_joiner_joins(joiner):
    text = f"ab{joiner}cd"
    [merged] = merge_adjacent(text, [_e("URL", 0, 2), _e("URL", 3, 5)])
    assert merged["word"] == text


@pytest.mark.parametrize("between", [" ", " and ", ", ", "\n", "x", "'"])
def test_a_space_a_word_or_other_characters_keep_entities_apart(between):
    text = f"ab{between}cd"
    out = merge_adjacent(text, [_e("EMAIL", 0, 2), _e("EMAIL", 2 + len(between), 4 + len(between))])
    assert _spans(text, out) == [("EMAIL", "ab"), ("EMAIL", "cd")]


def test_different_groups_never_merge_and_runs_restart():
    text = "ab.cd.ef-gh"
    ents = [_e("EMAIL", 0, 2), _e("URL", 3, 5), _e("URL", 6, 8), _e("EMAIL", 9, 11)]
    assert _spans(text, merge_adjacent(text, ents)) == [
        ("EMAIL", "ab"),
        ("URL", "cd.ef"),
        ("EMAIL", "gh"),
    ]


def test_offsets_and_words_slice_the_original_text_after_non_ascii():
    text = "Zoë Müller, née Weiß: wrïte to zoë.m@exämple.de"
    at = text.index("zoë")
    ents = [
        _e("EMAIL", at, at + 3, word="zoe"),
        _e("EMAIL", at + 3, at + 4),
        _e("EMAIL", at + 4, len(text)),
    ]
    [merged] = merge_adjacent(text, ents)
    assert merged["word"] == text[merged["start"] : merged["end"]] == "zoë.m@exämple.de"
    [alone] = merge_adjacent(text, [_e("GIVEN_NAME", 0, 3, word="zoe")])
    assert alone["word"] == "Zoë"  # every entity's word is its exact slice


def test_entities_without_offsets_stay_apart():
    ents = [
        _e("X", 0, 1),
        {"entity_group": "X", "start": None, "end": None, "score": 1.0, "word": "y"},
    ]
    assert len(merge_adjacent("ab", ents)) == 2


# -- on the embedded PII model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def pii():
    return Pipeline.create("ner", batch_size=4)


CASES = [
    (
        "My name is John Smith and I live at 42 Baker Street, Springfield, IL 62704. "
        "Email john.smith@example.com",
        [
            ("GIVEN_NAME", "John"),
            ("SURNAME", "Smith"),
            ("BUILDING_NUMBER", "42"),
            ("STREET_NAME", "Baker Street"),
            ("CITY", "Springfield"),
            ("STATE", "IL"),
            ("ZIP_CODE", "62704"),
            ("EMAIL", "john.smith@example.com"),
        ],
    ),
    ("mail maria.g@example.org now", [("EMAIL", "maria.g@example.org")]),
    (
        "Contact: Wei Zhang, +1 415 555 0199, wei.zhang@mail.com",
        [
            ("GIVEN_NAME", "Wei"),
            ("SURNAME", "Zhang"),
            ("PHONE", "+1 415 555 0199"),
            ("EMAIL", "wei.zhang@mail.com"),
        ],
    ),
    ("Write to ana@foo.com and bob@bar.org", [("EMAIL", "ana@foo.com"), ("EMAIL", "bob@bar.org")]),
    ("My website is http://maria-garcia.net/blog", [("URL", "http://maria-garcia.net/blog")]),
    ("My number is 020-7946-0958.", [("PHONE", "020-7946-0958")]),
    (
        "Driver's license D1234567 was issued in California to Kevin O'Brien.",
        [
            ("DRIVERS_LICENSE", "D1234567"),
            ("STATE", "California"),
            ("GIVEN_NAME", "Kevin"),
            ("SURNAME", "O'Brien"),
        ],
    ),
    (
        "Dr. Aisha Okonkwo moved to 1600 Pennsylvania Avenue NW, Washington, DC 20500.",
        [
            ("GIVEN_NAME", "Aisha"),
            ("SURNAME", "Okonkwo"),
            ("BUILDING_NUMBER", "1600"),
            ("STREET_NAME", "Pennsylvania Avenue NW"),
            ("STATE", "DC"),
            ("ZIP_CODE", "20500"),
        ],
    ),
    (
        "Jean-Luc Picard met José Álvarez at 221B Baker Street",
        [
            ("GIVEN_NAME", "Jean-Luc"),
            ("SURNAME", "Picard"),
            ("GIVEN_NAME", "José"),
            ("SURNAME", "Álvarez"),
            ("BUILDING_NUMBER", "221B"),
            ("STREET_NAME", "Baker Street"),
        ],
    ),
]


@pytest.mark.parametrize("text, expected", CASES, ids=[c[0][:24] for c in CASES])
def test_pii_default_gives_whole_entities(pii, text, expected):
    [got] = pii(text).predictions
    assert [(e.entity, e.word) for e in got] == expected
    assert all(text[e.start : e.end] == e.word and e.is_grouped for e in got)


def test_pii_default_batches_like_single_calls(pii):
    texts = [text for text, _ in CASES]
    batched, single = pii(texts).predictions, [pii(t).predictions[0] for t in texts]
    spans = [[(e.entity, e.word, e.start, e.end) for e in p] for p in batched]
    assert spans == [[(e.entity, e.word, e.start, e.end) for e in p] for p in single]
    for b, s in zip(batched, single):  # padding to the batch's length changes the sums' order
        assert [e.score for e in b] == pytest.approx([e.score for e in s], abs=1e-5)


def test_merge_adjacent_false_restores_the_pieces(pii):
    text = "mail maria.g@example.org now"
    [pieces] = pii(text, merge_adjacent=False).predictions
    assert [e.word for e in pieces] == ["maria", ".", "g", "@", "example", ".", "org"]
    created = Pipeline.create("ner", merge_adjacent=False)
    assert created(text).predictions == [pieces]
    assert pii(text, aggregation_strategy="simple").predictions[0][0].word == "maria.g@example.org"


def test_merge_needs_an_aggregation_strategy(pii, shared_dir):
    with pytest.raises(
        ConfigError,
        match=r"(?s)merge_adjacent=True .* aggregation_strategy other than 'none'.*ships",
    ):
        Pipeline.create("ner", aggregation_strategy="none")
    model = shared_dir / "reference" / "nlp" / "token-classification"
    with pytest.raises(ConfigError, match=r"aggregation_strategy other than 'none'"):
        Pipeline.create("ner", model, merge_adjacent=True)
    with pytest.raises(ValidationError, match=r"merge_adjacent=False"):
        pii("mail a@b.org", aggregation_strategy="none")
    plain = Pipeline.create("ner", aggregation_strategy="none", merge_adjacent=False)
    assert plain("mail a@b.org").predictions[0][0].index is not None
    other = Pipeline.create("ner", model)
    assert other.options.merge_adjacent is False  # shipped defaults are the embedded model's only


def test_round_trips_through_config_and_server_kwargs(pii):
    text = "mail maria.g@example.org now"
    off = Pipeline.create("ner", merge_adjacent=False)
    again = Pipeline.from_config(off.to_config())
    assert again.options.merge_adjacent is False
    assert again(text).predictions == off(text).predictions
    assert Pipeline.from_config(pii.to_config())(text).predictions == pii(text).predictions
    on = Pipeline.create(
        "ner", model_path="zoo:pii-ner-minilm", aggregation_strategy="max", merge_adjacent=True
    )
    assert Pipeline.from_config(on.to_config()).options.aggregation_strategy == "max"

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from sparsepipe.server import create_app

    app = create_app(
        {
            "endpoints": [
                {"task": "ner", "name": "merged"},
                {"task": "ner", "name": "pieces", "kwargs": {"merge_adjacent": False}},
            ]
        }
    )
    with TestClient(app) as client:
        merged = client.post("/v2/models/merged/infer", json={"inputs": text}).json()
        pieces = client.post("/v2/models/pieces/infer", json={"inputs": text}).json()
    assert [e["word"] for e in merged["predictions"][0]] == ["maria.g@example.org"]
    assert len(pieces["predictions"][0]) == 7
