"""Extraction quality and speed on an article-extraction corpus.

    python benchmarks/extraction.py /work/shared/corpus/extraction-dev [--compare] [--repeat 3]

The corpus folder holds ``html/<id>.html.gz`` and ``ground-truth.json`` (``{id: {"articleBody",
"url"}}``), as scrapinghub's article-extraction-benchmark; it is read in place, never copied.

Quality is that benchmark's metric: tokens are ``\\w+`` (case-sensitive), compared as multisets of
overlapping 4-token shingles; precision and recall per page (normalised, so long pages weigh no
more than short ones), averaged over pages (an empty prediction counts for recall only), and F1
from the two means. Speed is pages per second of ``extract_page`` in this process, then of
``ExtractorPool`` on every core (pool start-up excluded, results checked equal).

``--compare`` also scores plain trafilatura configurations, to show what the cleaning adds.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from marsad.extract import ExtractorPool, extract_page

T = TypeVar("T")
_TOKEN = re.compile(r"\w+")
SHINGLE = 4


@dataclass(frozen=True)
class Page:
    id: str
    url: str
    html: bytes
    truth: str


def load_corpus(folder: Path) -> list[Page]:
    truth = json.loads((folder / "ground-truth.json").read_text(encoding="utf-8"))
    pages = []
    for page_id, item in sorted(truth.items()):
        html = gzip.decompress((folder / "html" / f"{page_id}.html.gz").read_bytes())
        pages.append(Page(page_id, item.get("url", ""), html, item.get("articleBody", "")))
    return pages


def shingles(text: str) -> Counter[tuple[str, ...]]:
    tokens = _TOKEN.findall(text or "")
    # A text shorter than a shingle is one (short) shingle, as in the benchmark.
    count = max(1, len(tokens) - SHINGLE + 1)
    return Counter(t for i in range(count) if (t := tuple(tokens[i : i + SHINGLE])))


def matching(truth: str, prediction: str) -> tuple[float, float, float]:
    """True positives, false positives, false negatives over shingles, normalised to sum 1."""
    want, got = shingles(truth), shingles(prediction)
    tp = sum((want & got).values())
    fp = sum(got.values()) - tp
    fn = sum(want.values()) - tp
    total = tp + fp + fn
    return (tp / total, fp / total, fn / total) if total else (0.0, 0.0, 0.0)


def scores(counts: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    def precision(tp: float, fp: float, fn: float) -> float:
        return 1.0 if fp == fn == 0 else tp / (tp + fp)

    def recall(tp: float, fp: float, fn: float) -> float:
        return 1.0 if fp == fn == 0 else tp / (tp + fn)

    p = statistics.mean(precision(*c) for c in counts if c[0] + c[1] > 0)
    r = statistics.mean(recall(*c) for c in counts if c[0] + c[2] > 0)
    return p, r, 2 * p * r / (p + r)


def evaluate(pages: list[Page], texts: list[str]) -> tuple[float, float, float]:
    return scores([matching(page.truth, text) for page, text in zip(pages, texts, strict=True)])


def timed(run: Callable[[], list[T]]) -> tuple[list[T], float]:
    start = time.perf_counter()
    texts = run()
    return texts, time.perf_counter() - start


def row(name: str, quality: tuple[float, float, float], pages_per_s: float | None) -> str:
    p, r, f1 = quality
    speed = f"{pages_per_s:8.1f}" if pages_per_s is not None else " " * 8
    return f"{name:<44} {p:9.4f} {r:9.4f} {f1:9.4f} {speed}"


def trafilatura_configurations() -> dict[str, dict]:
    return {
        "trafilatura default": {},
        "trafilatura favor_precision": {"favor_precision": True},
        "trafilatura favor_recall": {"favor_recall": True},
        "trafilatura fast + favor_precision": {"fast": True, "favor_precision": True},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "corpus", type=Path, help="folder with html/*.html.gz and ground-truth.json"
    )
    parser.add_argument("--compare", action="store_true", help="also score plain trafilatura")
    parser.add_argument("--workers", type=int, default=0, help="pool workers (0: one per core)")
    parser.add_argument("--repeat", type=int, default=2, help="passes over the corpus for the pool")
    args = parser.parse_args()
    logging.getLogger("trafilatura").setLevel(logging.ERROR)  # "discarding data" on empty pages

    pages = load_corpus(args.corpus)
    n = len(pages)
    print(f"{n} pages from {args.corpus}; {os.cpu_count()} cores")
    print(f"{'':<44} {'precision':>9} {'recall':>9} {'F1':>9} {'pages/s':>8}")

    if args.compare:
        import trafilatura

        def plain(options: dict) -> list[str]:
            return [
                trafilatura.extract(p.html, url=p.url, include_comments=False, **options) or ""
                for p in pages
            ]

        for name, options in trafilatura_configurations().items():
            texts, seconds = timed(partial(plain, options))
            print(row(name, evaluate(pages, texts), n / seconds), flush=True)

    extract_page(pages[0].html, pages[0].url)  # load the language model outside the timing
    results, seconds = timed(lambda: [extract_page(p.html, p.url) for p in pages])
    texts = [r.text for r in results]
    print(row("marsad extract_page (1 process)", evaluate(pages, texts), n / seconds), flush=True)

    batch = [(p.url, p.html) for p in pages] * args.repeat
    with ExtractorPool(workers=args.workers) as pool:
        pool.extract_many(batch[: pool.workers * 2])  # start and warm up every worker
        pooled, seconds = timed(lambda: pool.extract_many(batch))
        name = f"marsad ExtractorPool ({pool.workers} workers)"
    same = [r.text for r in pooled[:n]] == texts
    print(row(name, evaluate(pages, [r.text for r in pooled[:n]]), len(batch) / seconds))

    statuses = Counter(r.status for r in results)
    languages = Counter(r.language for r in results)
    print(f"statuses: {dict(statuses)}; languages: {dict(languages.most_common())}")
    print(f"pool results identical to single-process: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
