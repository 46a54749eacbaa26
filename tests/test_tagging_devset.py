"""The labelled tagging dev set (benchmarks/data/tagging-dev.jsonl) is well-formed and balanced;
the set of long articles (benchmarks/data/tagging-long.jsonl) is well-formed and long.

Only the set's shape is checked here; the tagger's scores on it are printed by
benchmarks/tagging.py and deliberately not asserted.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from marsad.tagging import TOPICS

DEV_SET = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "tagging-dev.jsonl"
FIELDS = {"id", "language", "title", "text", "topics", "note"}
ARABIC = re.compile(r"[\u0600-\u06FF]")
MIN_ITEMS = 180
MIN_POSITIVES = 35


def hard_negative(item: dict) -> bool:
    return not item["topics"] or "near-miss" in item["note"].lower()


LONG_SET = DEV_SET.with_name("tagging-long.jsonl")


def read(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert all(line.strip() for line in lines), f"blank line in {path.name}"
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def items() -> list[dict]:
    return read(DEV_SET)


@pytest.fixture(scope="module", params=[DEV_SET, LONG_SET], ids=["dev", "long"])
def labelled(request) -> list[dict]:
    """Either set: what holds for both."""
    return read(request.param)


def test_size(items: list[dict]) -> None:
    assert len(items) >= MIN_ITEMS


def test_items_are_well_formed(labelled: list[dict]) -> None:
    for item in labelled:
        assert isinstance(item, dict) and set(item) == FIELDS, item.get("id")
        assert re.fullmatch(r"(en|ar)-\d{3}", item["id"]), item["id"]
        assert item["language"] in ("en", "ar") and item["id"].startswith(item["language"] + "-")
        assert isinstance(item["title"], str) and item["title"].strip(), item["id"]
        assert isinstance(item["text"], str) and len(item["text"]) >= 80, item["id"]
        assert isinstance(item["note"], str) and "\n" not in item["note"], item["id"]
        assert isinstance(item["topics"], list), item["id"]


def test_ids_unique(labelled: list[dict]) -> None:
    duplicates = [i for i, n in Counter(item["id"] for item in labelled).items() if n > 1]
    assert not duplicates


def test_no_duplicate_texts(labelled: list[dict]) -> None:
    duplicates = [t for t, n in Counter(item["text"] for item in labelled).items() if n > 1]
    assert not duplicates


def test_topics_valid(labelled: list[dict]) -> None:
    for item in labelled:
        assert set(item["topics"]) <= set(TOPICS), item["id"]
        assert len(set(item["topics"])) == len(item["topics"]), item["id"]


def test_language_matches_script(labelled: list[dict]) -> None:
    for item in labelled:
        arabic = bool(ARABIC.search(item["title"] + item["text"]))
        assert arabic == (item["language"] == "ar"), item["id"]


def test_both_languages_arabic_share(items: list[dict]) -> None:
    languages = Counter(item["language"] for item in items)
    assert languages["en"] and languages["ar"]
    share = languages["ar"] / len(items)
    assert 0.30 <= share <= 0.50, f"Arabic share {share:.2f}"


@pytest.mark.parametrize("topic", TOPICS)
def test_enough_positives_per_topic(items: list[dict], topic: str) -> None:
    assert sum(topic in item["topics"] for item in items) >= MIN_POSITIVES


def test_multi_topic_items_present(items: list[dict]) -> None:
    assert sum(len(item["topics"]) >= 2 for item in items) >= 10
    assert any(len(item["topics"]) == len(TOPICS) for item in items)


def test_hard_negatives_at_least_a_third(items: list[dict]) -> None:
    hard = sum(hard_negative(item) for item in items)
    assert hard * 3 >= len(items), f"{hard} of {len(items)} items are negatives or near-misses"


def test_hard_negatives_in_both_languages(items: list[dict]) -> None:
    for language in ("en", "ar"):
        subset = [item for item in items if item["language"] == language]
        assert sum(not item["topics"] for item in subset) * 4 >= len(subset), language


def test_long_articles_are_long_with_negatives_and_every_topic() -> None:
    long = read(LONG_SET)
    assert len(long) >= 50 and all(len(item["text"]) >= 1500 for item in long)
    assert all("\n\n" in item["text"] for item in long)  # paragraphs, as pages have
    assert sum(not item["topics"] for item in long) * 2 >= len(long)  # the background cases
    for topic in TOPICS:
        assert sum(topic in item["topics"] for item in long) >= 5, topic
