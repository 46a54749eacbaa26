"""Story clusters: copies of one story across outlets share a ``cluster_id``.

Near-duplicate detection with MinHash over word shingles (datasketch) and locality-sensitive
hashing kept in the database: each article's signature is cut into bands, and articles sharing a
band hash within a time window are candidates; a candidate joins the cluster when the estimated
Jaccard similarity of the two texts reaches the threshold, or when the shorter text lies almost
whole inside the longer (containment, below). Syndicated wire copies, re-publications, light
rewrites, shortened copies and extended versions land together; different stories about the same
event do not.

Containment. An outlet that runs only the first half of a wire story, or a long version that adds
local paragraphs to a short wire copy, shares most of the shorter text but only half of the union:
Jaccard ~0.5, below the threshold. With each text's number of distinct shingles a and b, the
estimated Jaccard J gives the overlap I = J(a + b)/(1 + J) and the share of the shorter text found
in the longer, C = I/min(a, b). A pair joins on C >= 0.8 when J >= 0.3 and the shorter text has
at least MIN_WORDS shingles:

- 0.8 leaves room on both sides: a copy with its own dateline and sign-off keeps C ~0.85-1, while
  different stories on one event, sharing names, places and a stock sentence, stay near C ~0.1-0.4.
- The floor J >= 0.3 is set by the estimator. Over 128 permutations J has standard error
  sqrt(J(1 - J)/128), and C's relative error is that over J(1 + J): ~10 % at J = 0.3, 15 % at 0.2
  and unbounded towards 0, where two or three chance matches between a short text and a long one
  read as full containment. As J <= min(a, b)/max(a, b), the floor also means the shorter text is
  at least 0.3 of the longer.
- Reach is set by the bands more than by the test: a pair is only compared when it shares a band,
  with probability 1 - (1 - J**4)**32. An exact copy of a story's first f has J = f and is found
  with probability 87 % at half length, 74 % at 0.45, 56 % at 0.4, 38 % at 0.35 and 23 % at 0.3;
  never below 0.3. A dateline and sign-off lower J a little: on 150- to 300-word stories, copies of
  half were caught ~78 % of the time, of 0.4 ~45 %, of 0.35 ~25 %. Catching shorter copies would
  take more, shorter bands (re-indexing every stored article), which would also surface many more
  unrelated candidates.

Articles stored before shingle counts were kept have none and are compared by Jaccard only.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from marsad.tagging import normalize_arabic
from models import Article, StoryBand

if TYPE_CHECKING:
    from datasketch import MinHash

NUM_PERM = 128
# 32 bands of 4 rows: a pair meets in some band with chance 1 - (1 - J**4)**32, which is 87 % at
# Jaccard 0.5, 98.8 % at 0.6 (the default threshold) and above 99.8 % from 0.65.
BANDS = 32
ROWS = NUM_PERM // BANDS
SHINGLE_WORDS = 5
MIN_WORDS = 40  # below this a text is a teaser: too little to tell two stories apart
MAX_WORDS = 5000  # a story's first 5,000 words identify it; more would only cost memory
DEFAULT_THRESHOLD = 0.6
DEFAULT_CONTAINMENT = 0.8  # reasoning in the module docstring
CONTAINMENT_MIN_JACCARD = 0.3  # below this the containment estimate is mostly noise
DEFAULT_WINDOW = timedelta(days=3)
# Pinned: signatures stored in the database must stay comparable across datasketch releases.
SCHEME = "affine32"
_WORD = re.compile(r"\w+")
_INSERT_BAND = insert(StoryBand.__table__)
_COMBINING = re.compile(r"[\u0300-\u036f\u064b-\u065f\u0670\u06d6-\u06ed\u0640]")


@lru_cache(maxsize=1)
def _template() -> MinHash:
    # Permutations are drawn once: building them per article would cost more than hashing.
    # datasketch is imported here, not at the top: it pulls in scipy (half a second), which a run
    # with nothing new to store never needs.
    from datasketch import MinHash

    return MinHash(num_perm=NUM_PERM, seed=1, scheme=SCHEME)


def words_of(text: str) -> list[str]:
    """Comparable words: case folded, Arabic letter forms folded, diacritics and tatweel dropped
    (``\\w+`` alone would split a word at each diacritic)."""
    return _WORD.findall(normalize_arabic(_COMBINING.sub("", text)).casefold())


def shingles_of(text: str | None) -> set[bytes] | None:
    """The text's distinct word shingles, or None for a text too short to compare."""
    words = words_of(text or "")[:MAX_WORDS]
    if len(words) < MIN_WORDS:
        return None
    return {
        " ".join(words[i : i + SHINGLE_WORDS]).encode() for i in range(len(words) - SHINGLE_WORDS + 1)
    }


def signature(text: str | None) -> np.ndarray | None:
    """The MinHash signature of a text's word shingles, or None for a text too short to compare."""
    shingles = shingles_of(text)
    return None if shingles is None else _minhash(shingles)


def _minhash(shingles: set[bytes]) -> np.ndarray:
    from datasketch import MinHash

    template = _template()
    minhash = MinHash(
        num_perm=NUM_PERM,
        permutations=template.permutations,
        scheme=SCHEME,
        hashfunc=zlib.crc32,  # stable across processes and 3x faster than the default SHA-1
    )
    minhash.update_batch(list(shingles))
    return minhash.hashvalues.astype(np.uint32)


def match_rank(
    sig: np.ndarray,
    count: int | None,
    head_sig: np.ndarray,
    head_count: int | None,
    settings: ClusterSettings,
) -> tuple[int, float] | None:
    """How well a text matches a cluster's head, higher is better; None if it does not match.

    A Jaccard match outranks any containment match: two texts that copy each other whole are
    stronger evidence of one story than one text found inside another, and it keeps the choice
    among Jaccard matches what it was before containment. Among containment matches the head
    holding most of the shorter text wins; estimates above 1 are noise and are cut to 1, so such
    heads tie and the oldest wins.
    """
    jaccard = similarity(sig, head_sig)
    if jaccard >= settings.threshold:
        return (1, jaccard)
    if (
        count is None  # stored before shingle counts were kept
        or head_count is None
        or min(count, head_count) < MIN_WORDS  # too little left to tell two stories apart
        or jaccard < CONTAINMENT_MIN_JACCARD
    ):
        return None
    contained = min(1.0, containment(jaccard, count, head_count))
    return (0, contained) if contained >= settings.containment else None


def containment(jaccard: float, a: int, b: int) -> float:
    """Estimated share of the shorter text's shingles that the longer contains, from the
    estimated Jaccard similarity and the two texts' numbers of distinct shingles."""
    overlap = jaccard * (a + b) / (1 + jaccard)
    return overlap / min(a, b)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of the two texts' shingle sets."""
    return float(np.count_nonzero(a == b)) / len(a)


def band_hashes(sig: np.ndarray) -> list[int]:
    """One signed 64-bit hash per band (BIGINT on every backend)."""
    raw = sig.astype("<u4").tobytes()
    width = ROWS * 4
    return [
        int.from_bytes(
            hashlib.blake2b(bytes([band]) + raw[band * width : (band + 1) * width], digest_size=8).digest(),
            "little",
            signed=True,
        )
        for band in range(BANDS)
    ]


def to_bytes(sig: np.ndarray) -> bytes:
    return sig.astype("<u4").tobytes()


def from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<u4")


@dataclass(frozen=True)
class ClusterSettings:
    threshold: float = DEFAULT_THRESHOLD
    window: timedelta = DEFAULT_WINDOW
    containment: float = DEFAULT_CONTAINMENT


@dataclass(frozen=True)
class ClusterItem:
    """An article to place: its id, its (new) text and its story time."""

    article_id: int
    text: str | None
    when: datetime


@dataclass(frozen=True)
class _Head:
    sig: np.ndarray
    shingle_count: int | None
    when: datetime


def assign_cluster(
    session: Session,
    article_id: int,
    text: str | None,
    when: datetime,
    settings: ClusterSettings = ClusterSettings(),
) -> int:
    """Give one article its story cluster and index its bands; returns the cluster id."""
    values = assign_clusters(session, [ClusterItem(article_id, text, when)], settings)[article_id]
    session.execute(
        update(Article).where(Article.id == article_id).values(**values),
        execution_options={"synchronize_session": False},
    )
    return values["cluster_id"]


def assign_clusters(
    session: Session, items: Sequence[ClusterItem], settings: ClusterSettings = ClusterSettings()
) -> dict[int, dict[str, Any]]:
    """Place a batch of articles, in order, in story clusters and index their bands.

    Returns each article's new ``cluster_id``, ``minhash`` and ``shingle_count`` for the caller to
    write with the rest of its row. The cluster id is the id of the cluster's first article, so it
    is stable and needs no table of its own. Each article sees the ones placed before it, in this
    batch as in the database, exactly as if they had been placed one by one: the database is read
    in three queries for the whole batch, and the batch's own articles are tracked in memory.
    Run inside the transaction that stores the articles.
    """
    ids = [item.article_id for item in items]
    sigs: dict[int, tuple[np.ndarray, int, list[int]]] = {}
    for item in items:
        shingles = shingles_of(item.text)
        if shingles is not None:
            sig = _minhash(shingles)
            sigs[item.article_id] = (sig, len(shingles), band_hashes(sig))

    # What the database says, read before anything is rewritten: an article of the batch keeps
    # its old bands and row until its own turn, as it would one by one.
    all_bands = {band for _, _, bands in sigs.values() for band in bands}
    stored_bands: dict[int, set[int]] = defaultdict(set)
    for chunk in _chunks(sorted(all_bands)):
        for band, other_id in session.execute(
            select(StoryBand.band_hash, StoryBand.article_id).where(StoryBand.band_hash.in_(chunk))
        ):
            stored_bands[band].add(other_id)
    stored_ids = {other for others in stored_bands.values() for other in others}
    cluster_of: dict[int, int] = {}  # candidate → its cluster head, as stored
    leaders: set[int] = set()  # batch articles that others have joined
    for chunk in _chunks(sorted(stored_ids)):
        for other_id, cluster_id in session.execute(
            select(Article.id, Article.cluster_id).where(Article.id.in_(chunk))
        ):
            cluster_of[other_id] = cluster_id
    for chunk in _chunks(ids):
        # A re-stored article that others have joined stays their head: moving it would orphan them.
        leaders.update(session.scalars(
            select(Article.cluster_id)
            .where(Article.cluster_id.in_(chunk), Article.id != Article.cluster_id)
            .distinct()
        ))
    head_ids = {cluster or other for other, cluster in cluster_of.items()}
    heads: dict[int, _Head] = {}
    for chunk in _chunks(sorted(head_ids)):
        for head_id, head_sig, head_count, head_when in session.execute(
            select(Article.id, Article.minhash, Article.shingle_count, Article.story_at)
            .where(Article.id.in_(chunk), Article.minhash.is_not(None))
        ):
            heads[head_id] = _Head(from_bytes(head_sig), head_count, head_when)

    placed: set[int] = set()
    placed_bands: dict[int, set[int]] = defaultdict(set)
    results: dict[int, dict[str, Any]] = {}
    band_rows: list[dict[str, int]] = []
    for item in items:
        article_id = item.article_id
        placed.add(article_id)
        if article_id not in sigs:
            cluster_of[article_id] = article_id
            heads.pop(article_id, None)
            results[article_id] = {"cluster_id": article_id, "minhash": None, "shingle_count": None}
            continue
        sig, count, bands = sigs[article_id]
        candidates: set[int] = set()
        for band in bands:
            # Stored bands of batch articles already placed were replaced by their new ones.
            candidates.update(other for other in stored_bands.get(band, ()) if other not in placed)
            candidates.update(placed_bands.get(band, ()))
        candidates.discard(article_id)
        best = article_id
        if candidates and article_id not in leaders:
            best = _closest(sig, count, candidates, cluster_of, heads, item.when, settings) or article_id
        cluster_of[article_id] = best
        if best != article_id:
            leaders.add(best)  # should the head come later in the batch, it stays where it is
        heads[article_id] = _Head(sig, count, item.when)
        for band in set(bands):
            placed_bands[band].add(article_id)
            band_rows.append({"band_hash": band, "article_id": article_id})
        results[article_id] = {"cluster_id": best, "minhash": to_bytes(sig), "shingle_count": count}

    for chunk in _chunks(ids):
        session.execute(delete(StoryBand).where(StoryBand.article_id.in_(chunk)))
    if band_rows:
        # One executemany of a statement compiled once (psycopg sends it as one pipeline).
        session.execute(_INSERT_BAND, band_rows)
    return results


def _closest(
    sig: np.ndarray,
    count: int,
    candidates: set[int],
    cluster_of: dict[int, int],
    heads: dict[int, _Head],
    when: datetime,
    settings: ClusterSettings,
) -> int | None:
    """The cluster whose first article this text copies, within the window; None if none does.

    Comparing with each cluster's first article, not with any member, keeps clusters from
    chaining: a run of similar but different stories (templated releases a few days apart) would
    otherwise merge step by step into one cluster spanning weeks.
    """
    best, best_rank = None, None
    for head_id in sorted({cluster_of.get(c) or c for c in candidates}):  # ties: the oldest cluster
        head = heads.get(head_id)
        if head is None or not (when - settings.window <= head.when <= when + settings.window):
            continue
        rank = match_rank(sig, count, head.sig, head.shingle_count, settings)
        if rank is not None and (best_rank is None or rank > best_rank):
            best, best_rank = head_id, rank
    return best


def _chunks(values: Sequence[int], size: int = 500) -> list[Sequence[int]]:
    # Bounded IN lists: SQLite allows 32,766 parameters per statement, PostgreSQL 65,535.
    return [values[i : i + size] for i in range(0, len(values), size)]
