"""Topic-tagging quality on the labelled dev set, and tagging speed on one core.

    python benchmarks/tagging.py [--dev benchmarks/data/tagging-dev.jsonl]
                                 [--corpus /work/shared/corpus/extraction-dev] [--errors]

Quality: every dev item (``{"id", "language", "title", "text", "topics", "note"}`` per line) is
tagged with ``get_tagger().tag(title, text, language)``; per topic, a predicted topic the item does
not carry is a false positive and a missing one a false negative. Precision, recall, F1 and support
(items labelled with the topic) are printed for all items and per language, then the macro mean
over topics, the micro figures over all topic decisions, the share of items whose predicted topic
set is exactly right, and how many items labelled with no topic got one. Precision with no
prediction is 1.0 when the topic has no support there and 0.0 otherwise. ``--errors`` lists every
false positive (with the evidence terms that fired) and false negative (with the item's note and
whatever other topics fired).

Speed: articles per second and MB/s (UTF-8 bytes of title + text) of ``tag`` in this process,
pinned to one CPU where the OS allows, best of three runs (a run repeats the set until it lasts
``--min-seconds``). ``--corpus`` is an extraction corpus folder (``html/<id>.html.gz`` and
``ground-truth.json``, as benchmarks/extraction.py reads); its pages are extracted once with
``marsad.extract.extract_page`` before any timing and the realistic full-length texts are tagged.
The corpus is read in place, never copied. The dev items are timed as well.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from marsad.tagging import TOPICS, get_tagger

DEFAULT_DEV = Path(__file__).resolve().parent / "data" / "tagging-dev.jsonl"
LANGUAGES = ("en", "ar")
RUNS = 3


@dataclass(frozen=True)
class Item:
    id: str
    language: str
    title: str
    text: str
    topics: frozenset[str]
    note: str


@dataclass(frozen=True)
class Doc:
    """One text to tag for the speed measurement."""

    title: str
    text: str
    language: str | None

    @property
    def size(self) -> int:
        return len(self.title.encode("utf-8")) + len(self.text.encode("utf-8"))


def load_dev(path: Path) -> list[Item]:
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        unknown = set(record["topics"]) - set(TOPICS)
        if unknown:
            raise SystemExit(f"{path}:{number}: unknown topics {sorted(unknown)}")
        items.append(
            Item(
                record["id"],
                record["language"],
                record["title"],
                record["text"],
                frozenset(record["topics"]),
                record.get("note", ""),
            )
        )
    return items


# --- quality -----------------------------------------------------------------------------------


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def support(self) -> int:
        return self.tp + self.fn

    @property
    def precision(self) -> float:
        if self.tp + self.fp == 0:
            return 1.0 if self.support == 0 else 0.0
        return self.tp / (self.tp + self.fp)

    @property
    def recall(self) -> float:
        return self.tp / self.support if self.support else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def count(items: Iterable[Item], predicted: dict[str, frozenset[str]], topic: str) -> Counts:
    c = Counts()
    for item in items:
        want, got = topic in item.topics, topic in predicted[item.id]
        c.tp += want and got
        c.fp += got and not want
        c.fn += want and not got
    return c


def row(name: str, support: int | str, c: Counts | None, p: float, r: float, f1: float) -> str:
    tally = f"{c.tp:5d} {c.fp:5d} {c.fn:5d}" if c else " " * 17
    return f"  {name:<22} {support:>7} {tally} {p:9.3f} {r:7.3f} {f1:7.3f}"


def report(title: str, items: Sequence[Item], predicted: dict[str, frozenset[str]]) -> None:
    print(f"\n{title} ({len(items)} items)")
    print(
        f"  {'':<22} {'support':>7} {'tp':>5} {'fp':>5} {'fn':>5} {'precision':>9} "
        f"{'recall':>7} {'F1':>7}"
    )
    per_topic = {topic: count(items, predicted, topic) for topic in TOPICS}
    for topic, c in per_topic.items():
        print(row(topic, c.support, c, c.precision, c.recall, c.f1))
    n = len(per_topic)
    macro = [
        sum(getattr(c, m) for c in per_topic.values()) / n for m in ("precision", "recall", "f1")
    ]
    print(row("macro", "", None, *macro))
    micro = Counts(*(sum(getattr(c, f) for c in per_topic.values()) for f in ("tp", "fp", "fn")))
    print(row("micro", micro.support, micro, micro.precision, micro.recall, micro.f1))
    exact = sum(item.topics == predicted[item.id] for item in items)
    untagged = [item for item in items if not item.topics]
    wrongly = sum(bool(predicted[item.id]) for item in untagged)
    print(
        f"  exact topic set {exact}/{len(items)} = {exact / len(items):.3f}; "
        f"items labelled with no topic that got one: {wrongly}/{len(untagged)}"
    )


def evidence_terms(item: Item, result, topic: str | None = None) -> str:
    """The evidence as term@field, plus the matched text where it differs from the term."""
    fields = {"title": item.title, "text": item.text}
    parts = []
    for tag in result.topics:
        if topic is not None and tag.topic != topic:
            continue
        terms = []
        for e in tag.evidence:
            surface = fields.get(e.field, "")[e.start : e.end]
            shown = f"{e.term!r}" if surface == e.term else f"{e.term!r}={surface!r}"
            terms.append(f"{shown}@{e.field}")
        terms = ", ".join(terms)
        parts.append(f"{tag.topic} {tag.score:.2f}: {terms}" if topic is None else terms)
    return "; ".join(parts) or "-"


def list_errors(items: Sequence[Item], results: dict) -> None:
    predicted = {item.id: topics_of(results[item.id]) for item in items}
    for topic in TOPICS:
        fps = [i for i in items if topic in predicted[i.id] and topic not in i.topics]
        fns = [i for i in items if topic in i.topics and topic not in predicted[i.id]]
        print(f"\n== {topic}: {len(fps)} false positives, {len(fns)} false negatives")
        for item in fps:
            print(f"  FP {item.id}  {item.title}")
            print(f"       evidence: {evidence_terms(item, results[item.id], topic)}")
            if item.note:
                print(f"       note: {item.note}")
        for item in fns:
            print(f"  FN {item.id}  {item.title}")
            print(
                f"       labels: {', '.join(sorted(item.topics))}; "
                f"tagger gave: {evidence_terms(item, results[item.id])}"
            )
            if item.note:
                print(f"       note: {item.note}")


def topics_of(result) -> frozenset[str]:
    return frozenset(tag.topic for tag in result.topics)


# --- speed ---------------------------------------------------------------------------------------


def pin_to_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity here), single process"


def corpus_docs(folder: Path) -> tuple[list[Doc], int]:
    """Extract every page once (not timed); returns the documents with text and the page count."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from extraction import load_corpus  # the same corpus reader as the extraction benchmark

    from marsad.extract import extract_page

    logging.getLogger("trafilatura").setLevel(logging.ERROR)
    pages = load_corpus(folder)
    docs = []
    for page in pages:
        extracted = extract_page(page.html, page.url)
        if extracted.text:
            docs.append(Doc(extracted.title or "", extracted.text, extracted.language))
    return docs, len(pages)


def on_topic(docs: Sequence[Doc], items: Sequence[Item]) -> list[Doc]:
    """Each corpus article with three labelled on-topic dev texts of its language spliced in at a quarter, half
    and three quarters of its length: an article of the beat, at a real article's length."""
    relevant = {
        lang: [i for i in items if i.topics and i.language == lang] for lang in LANGUAGES
    }
    out = []
    for n, doc in enumerate(docs):
        pool = relevant["ar" if doc.language == "ar" else "en"]
        text = doc.text
        for k, fraction in enumerate((0.75, 0.5, 0.25)):
            at = text.rfind("\n", 0, int(len(text) * fraction)) + 1
            text = text[:at] + pool[(3 * n + k) % len(pool)].text + "\n" + text[at:]
        out.append(Doc(doc.title, text, doc.language))
    return out


def dense(items: Sequence[Item]) -> list[Doc]:
    """The worst case: ten dev texts of one language per document, nearly every sentence a hit."""
    out = []
    for lang in LANGUAGES:
        pool = [i for i in items if i.language == lang]
        for k in range(0, len(pool), 10):
            chunk = pool[k : k + 10]
            out.append(Doc(chunk[0].title, "\n\n".join(i.text for i in chunk), lang))
    return out


def throughput(docs: Sequence[Doc], min_seconds: float) -> tuple[float, float]:
    """Best of RUNS runs: (articles per second, MB per second)."""
    tagger = get_tagger()
    for doc in docs[:5]:  # warm up lazily built state outside the timing
        tagger.tag(doc.title, doc.text, doc.language)
    size = sum(doc.size for doc in docs)
    best = float("inf")  # seconds per pass over docs
    for _ in range(RUNS):
        start = time.perf_counter()
        passes = 0
        while True:
            for doc in docs:
                tagger.tag(doc.title, doc.text, doc.language)
            passes += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = min(best, elapsed / passes)
    return len(docs) / best, size / best / 1e6


def speed_line(name: str, docs: Sequence[Doc], min_seconds: float) -> str:
    if not docs:
        return f"  {name}: no documents"
    per_s, mb_s = throughput(docs, min_seconds)
    mean_kb = sum(doc.size for doc in docs) / len(docs) / 1000
    return (
        f"  {name:<34} {len(docs):5d} docs {mean_kb:7.1f} KB mean "
        f"{per_s:10.1f} articles/s {mb_s:8.2f} MB/s"
    )


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dev", type=Path, default=DEFAULT_DEV, help="labelled JSONL dev set")
    parser.add_argument("--corpus", type=Path, help="extraction corpus folder for the speed test")
    parser.add_argument("--errors", action="store_true", help="list false positives/negatives")
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=1.0,
        help="shortest duration of one timed run (the set is repeated)",
    )
    args = parser.parse_args()

    items = load_dev(args.dev)
    tagger = get_tagger()
    results = {item.id: tagger.tag(item.title, item.text, item.language) for item in items}
    predicted = {item_id: topics_of(result) for item_id, result in results.items()}
    by_language = {lang: [i for i in items if i.language == lang] for lang in LANGUAGES}
    sizes = ", ".join(f"{len(v)} {k}" for k, v in by_language.items())
    print(f"tagger version {tagger.version}; dev set {args.dev}: {len(items)} items ({sizes})")

    report("all languages", items, predicted)
    for lang, subset in by_language.items():
        if subset:
            report(f"language {lang}", subset, predicted)
    if args.errors:
        list_errors(items, results)

    where = pin_to_one_core()
    print(f"\nspeed of tag() on one core ({where}), best of {RUNS} runs")
    if args.corpus:
        docs, pages = corpus_docs(args.corpus)
        print(
            f"  corpus {args.corpus}: {pages} pages, {len(docs)} with extracted text "
            "(extraction not timed)"
        )
        print(speed_line("corpus articles", docs, args.min_seconds), flush=True)
        print(speed_line("corpus + 3 on-topic paragraphs", on_topic(docs, items), args.min_seconds))
    dev_docs = [Doc(i.title, i.text, i.language) for i in items]
    print(speed_line("dev-set items", dev_docs, args.min_seconds), flush=True)
    print(speed_line("dense: 10 dev items per text", dense(items), args.min_seconds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
