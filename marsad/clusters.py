"""Story clusters: copies of one story across outlets share a ``cluster_id``.

Near-duplicate detection with MinHash over word shingles (datasketch) and locality-sensitive
hashing kept in the database: each article's signature is cut into bands, and articles sharing a
band hash within a time window are candidates; a candidate joins the cluster when the estimated
Jaccard similarity of the two texts reaches the threshold. Syndicated wire copies, re-publications
and light rewrites land together; different stories about the same event do not.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import numpy as np
from datasketch import MinHash
from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.orm import Session

from marsad.tagging import normalize_arabic
from models import Article, StoryBand

NUM_PERM = 128
BANDS = 32  # 32 bands of 4 rows: pairs above Jaccard ~0.5 meet in some band with > 99 % chance
ROWS = NUM_PERM // BANDS
SHINGLE_WORDS = 5
MIN_WORDS = 40  # below this a text is a teaser: too little to tell two stories apart
MAX_WORDS = 5000  # a story's first 5,000 words identify it; more would only cost memory
DEFAULT_THRESHOLD = 0.6
DEFAULT_WINDOW = timedelta(days=3)
# Pinned: signatures stored in the database must stay comparable across datasketch releases.
SCHEME = "affine32"
_WORD = re.compile(r"\w+")
_COMBINING = re.compile(r"[\u0300-\u036f\u064b-\u065f\u0670\u06d6-\u06ed\u0640]")


@lru_cache(maxsize=1)
def _template() -> MinHash:
    # Permutations are drawn once: building them per article would cost more than hashing.
    return MinHash(num_perm=NUM_PERM, seed=1, scheme=SCHEME)


def words_of(text: str) -> list[str]:
    """Comparable words: case folded, Arabic letter forms folded, diacritics and tatweel dropped
    (``\\w+`` alone would split a word at each diacritic)."""
    return _WORD.findall(normalize_arabic(_COMBINING.sub("", text)).casefold())


def signature(text: str | None) -> np.ndarray | None:
    """The MinHash signature of a text's word shingles, or None for a text too short to compare."""
    words = words_of(text or "")[:MAX_WORDS]
    if len(words) < MIN_WORDS:
        return None
    shingles = {
        " ".join(words[i : i + SHINGLE_WORDS]).encode() for i in range(len(words) - SHINGLE_WORDS + 1)
    }
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
    story_time = func.coalesce(Article.published_at, Article.discovered_at)
    best, best_score = None, settings.threshold
    for head_id, head_sig in session.execute(
        select(Article.id, Article.minhash)
        .where(
            Article.id.in_(heads),
            Article.minhash.is_not(None),
            and_(story_time >= when - settings.window, story_time <= when + settings.window),
        )
        .order_by(Article.id)  # ties go to the oldest cluster, on every backend
    ):
        score = similarity(sig, from_bytes(head_sig))
        if score >= best_score and (best is None or score > best_score):
            best, best_score = head_id, score
    return best


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
    sig = signature(text)
    if sig is None:
        session.execute(
            update(Article).where(Article.id == article_id).values(cluster_id=article_id, minhash=None)
        )
        return article_id

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
        best_cluster = _closest_cluster(session, sig, candidate_ids, when, settings) or article_id
    session.execute(
        update(Article)
        .where(Article.id == article_id)
        .values(cluster_id=best_cluster, minhash=to_bytes(sig)),
        execution_options={"synchronize_session": False},
    )
    # One multi-row INSERT: 32 single-row statements cost several times more on PostgreSQL.
    session.execute(
        insert(StoryBand).values([{"band_hash": band, "article_id": article_id} for band in set(bands)])
    )
    return best_cluster
