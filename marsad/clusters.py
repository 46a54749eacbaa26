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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import and_, delete, insert, select, update
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


def _leads_a_cluster(session: Session, article_id: int) -> bool:
    # A re-stored article that others have joined stays their head: moving it would orphan them.
    return (
        session.scalar(
            select(Article.id).where(Article.cluster_id == article_id, Article.id != article_id).limit(1)
        )
        is not None
    )


def _closest_cluster(
    session: Session,
    sig: np.ndarray,
    shingle_count: int,
    candidate_ids: Sequence[int],
    when: datetime,
    settings: ClusterSettings,
) -> int | None:
    """The cluster whose first article this text copies, within the window; None if none does.

    Comparing with each cluster's first article, not with any member, keeps clusters from
    chaining: a run of similar but different stories (templated releases a few days apart) would
    otherwise merge step by step into one cluster spanning weeks.
    """
    heads = {
        cluster_id or candidate_id
        for candidate_id, cluster_id in session.execute(
            select(Article.id, Article.cluster_id).where(Article.id.in_(candidate_ids))
        )
    }
    story_time = Article.story_at
    best, best_rank = None, None
    for head_id, head_sig, head_count in session.execute(
        select(Article.id, Article.minhash, Article.shingle_count)
        .where(
            Article.id.in_(heads),
            Article.minhash.is_not(None),
            and_(story_time >= when - settings.window, story_time <= when + settings.window),
        )
        .order_by(Article.id)  # ties go to the oldest cluster, on every backend
    ):
        rank = match_rank(sig, shingle_count, from_bytes(head_sig), head_count, settings)
        if rank is not None and (best_rank is None or rank > best_rank):
            best, best_rank = head_id, rank
    return best


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


def assign_cluster(
    session: Session,
    article_id: int,
    text: str | None,
    when: datetime,
    settings: ClusterSettings = ClusterSettings(),
) -> int:
    """Give the article its story cluster and index its bands; returns the cluster id.

    The cluster id is the id of the cluster's first article, so it is stable and needs no table
    of its own. Run inside the transaction that stores the article: later articles of the same
    batch see it.
    """
    session.execute(delete(StoryBand).where(StoryBand.article_id == article_id))
    shingles = shingles_of(text)
    if shingles is None:
        session.execute(
            update(Article)
            .where(Article.id == article_id)
            .values(cluster_id=article_id, minhash=None, shingle_count=None)
        )
        return article_id
    sig = _minhash(shingles)

    bands = band_hashes(sig)
    # Two index lookups rather than one join: the band index narrows to a handful of articles
    # whatever the planner believes about table sizes (a join was planned as a scan of articles).
    candidate_ids = session.scalars(
        select(StoryBand.article_id)
        .where(StoryBand.band_hash.in_(bands), StoryBand.article_id != article_id)
        .distinct()
    ).all()
    best_cluster = article_id
    if candidate_ids and not _leads_a_cluster(session, article_id):
        closest = _closest_cluster(session, sig, len(shingles), candidate_ids, when, settings)
        best_cluster = closest or article_id
    session.execute(
        update(Article)
        .where(Article.id == article_id)
        .values(cluster_id=best_cluster, minhash=to_bytes(sig), shingle_count=len(shingles)),
        execution_options={"synchronize_session": False},
    )
    # One executemany of a statement compiled once: a multi-row VALUES clause was rebuilt for
    # every article (about 2 ms of Python), and psycopg sends an executemany as one pipeline.
    session.execute(
        _INSERT_BAND, [{"band_hash": band, "article_id": article_id} for band in set(bands)]
    )
    return best_cluster
