"""sparsepipe demo: the embedded default pipelines, offline, on a fresh install.

Runs sentiment analysis (``zoo:sentiment-minilm-sparse80``, 80% pruned MiniLM) and PII tagging
(``zoo:pii-ner-minilm``) on a few texts, prints the typed results and per-stage timings, and checks
that the same pipeline on onnxruntime (when installed) gives the same answers.
"""

from __future__ import annotations

import importlib.util

from sparsepipe import Pipeline, models


def main() -> None:
    print("embedded models:")
    for m in models.list():
        print(f"  {m.uri:32s} {m.task:22s} {m.license}")

    reviews = [
        "A gorgeous, heartfelt film with terrific performances.",
        "Two hours of my life I will never get back.",
        "The plot is thin, but the jokes land more often than not.",
    ]
    sentiment = Pipeline.create("sentiment-analysis", batch_size=4)
    result = sentiment(reviews)
    print("\nsentiment-analysis:")
    for text, label, score in zip(reviews, result.labels, result.scores):
        print(f"  {label:8s} {score:.3f}  {text}")
    t = sentiment.timings
    print(
        f"  timings: pre {t.pre * 1e3:.1f} ms, engine {t.engine * 1e3:.1f} ms, "
        f"post {t.post * 1e3:.1f} ms"
    )

    ner = Pipeline.create("ner")  # the PII model's defaults: aggregation "first", merge_adjacent
    text = "Hi, I'm Maria Garcia from 12 Elm Street, Austin TX 78701; mail maria.g@example.org"
    entities = ner(text).predictions[0]
    print("\nner (PII):", text)
    for e in entities:
        print(f"  {e.entity:16s} {e.score:.3f}  {e.word!r}")
    pieces = ner(text, merge_adjacent=False).predictions[0]
    emails = [e.word for e in pieces if e.entity == "EMAIL"]
    print(f"  (merge_adjacent=False gives the model's own pieces: EMAIL {emails})")

    if importlib.util.find_spec("onnxruntime") is not None:
        ort = Pipeline.create("sentiment-analysis", batch_size=4, engine_type="onnxruntime")
        same = ort(reviews).labels == result.labels
        print(f"\nonnxruntime gives the same sentiment labels: {same}")
        if not same:
            raise SystemExit("engines disagree")


if __name__ == "__main__":
    main()
