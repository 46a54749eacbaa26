"""Story clusters: copies of one story across outlets share a ``cluster_id``.

Near-duplicate detection with MinHash over word shingles (datasketch) and locality-sensitive
hashing kept in the database: each article's signature is cut into bands, and articles sharing a
band hash within a time window are candidates; a candidate joins the cluster when the estimated
Jaccard similarity of the two texts reaches the threshold, or when the shorter text lies almost
whole inside the longer (containment, below), unless the two state different facts where they
differ (templated releases, below). Syndicated wire copies, re-publications, light rewrites,
shortened copies and extended versions land together; different stories about the same event,
and the same boilerplate about another event, do not.

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

Templated releases. Press releases, ministry statements, daily casualty bulletins and market
reports repeat the same paragraphs with another place, name, date or figure: two CENTCOM raid
releases of ~100 words reach Jaccard ~0.7, two days of an exchange-rate report ~0.7. Shingles
cannot tell them from copies, the facts can. After a pair matches on its signatures, the two texts
are aligned on their shared word 5-grams (the anchors; monotone, so a moved paragraph counts as
dropped in one place and added in the other), and the stretches between two anchors where both
texts say something, each in place of the other, are read for facts: numbers (digits of any
script, separators dropped, and the number words two to twelve), capitalised words not opening a
sentence, Arabic weekday and month names, and the Arabic word after a name cue (محافظة, قرية,
أبو, الشيخ, ...). A fact counts when the other text nowhere has that word, nor, for a Latin
name, one with the same consonants (Mayadin and Mayadeen, Deir ez-Zor and Deir Ezzor). If each
text holds at least MIN_DIFFERING_FACTS = 2 such facts, they report different events and do not
join:

- Stretches only one text has do not count: a dropped sentence, a local paragraph, an outlet's
  "read also" line, nor what lies outside the anchors (datelines, bylines, sign-offs, the rest of
  a longer text); nor whole sentences each, such as two outlets' "read also" lines at one
  paragraph break: a template's slots lie within its sentences. Light rewrites change words, not
  facts; letter forms and diacritics are folded.
- Two, on each side: a wire copy that corrects one figure, or an outlet that writes "Islamic
  State" where the other wrote "ISIS", still joins. A template that changes only one fact (a
  weekday, with nothing else) is not told apart, nor one whose differing facts lie before its
  first or after its last anchor; Arabic names are only seen after a cue.
- The facts come from the texts: a head's text is read with its signature, in the same query
  (still three per batch), and a text is read for facts only when its signature matches a head's
  (then once per batch). A head stored without its text is compared by signature only.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property, lru_cache
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
MIN_DIFFERING_FACTS = 2  # reasoning in the module docstring
DEFAULT_WINDOW = timedelta(days=3)
# Pinned: signatures stored in the database must stay comparable across datasketch releases.
SCHEME = "affine32"
_WORD = re.compile(r"\w+")
_INSERT_BAND = insert(StoryBand.__table__)
_COMBINING = re.compile(r"[\u0300-\u036f\u064b-\u065f\u0670\u06d6-\u06ed\u0640]")

# Facts (module docstring, "Templated releases").
# Each word with what precedes it; 43,391 and ٤٣٬٣٩١ are one number.
_FACT_TOKEN = re.compile(r"(\W*)(\d+(?:[.,\u066b\u066c]\d+)*|\w+)")
_SENTENCE_END = re.compile(r"[.!?:\n\u061f]")
_DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹", "0123456789" * 2)
_INDIC_DIGIT = re.compile("[٠-٩۰-۹]")
_NOT_DIGIT = re.compile(r"\D")
# A Latin name's consonants, doubled letters once, no final h: Mayadin and Mayadeen, Deir ez-Zor
# and Deir Ezzor, Hasakah and Hasaka are spelled apart, not different places.
_VOWELS = re.compile(r"[aeiouy]+|h$")
_DOUBLED = re.compile(r"(.)\1+")
_NUMBER_WORDS = {
    **{word: str(n) for n, word in enumerate(
        "two three four five six seven eight nine ten eleven twelve".split(), start=2)},
    **{normalize_arabic(word): str(n) for n, words in enumerate((
        "اثنان اثنين اثنتان اثنتين", "ثلاث ثلاثة", "أربع أربعة", "خمس خمسة", "ست ستة", "سبع سبعة",
        "ثماني ثمانية", "تسع تسعة", "عشر عشرة"), start=2) for word in words.split()},
}  # fmt: skip
# Arabic has no capitals: weekdays and months (Gregorian and Levantine names) are facts, and so
# is the word after a cue that a name follows, with or without a joined و ب ل ف.
_ARABIC_CALENDAR = frozenset(normalize_arabic(
    "الأحد الاثنين الإثنين الثلاثاء الأربعاء الخميس الجمعة السبت يناير فبراير مارس أبريل إبريل "
    "مايو يونيو يونيه يوليو يوليه أغسطس سبتمبر أكتوبر نوفمبر ديسمبر كانون شباط آذار نيسان أيار "
    "حزيران تموز آب أيلول تشرين"
).split())
_ARABIC_NAME_CUES = frozenset(normalize_arabic(
    "محافظة مدينة بلدة قرية قضاء ناحية منطقة حي مخيم ريف وادي جبل جبال ولاية مديرية أبو بن المدعو "
    "الشيخ العميد اللواء العقيد الفريق الرائد النقيب"
).split())


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


class _Facts:
    """A text as the fact check reads it: its words and where each word 5-gram first occurs.
    Which words are facts is only worked out where two texts differ."""

    __slots__ = ("_skeletons", "gaps", "grams", "shingles", "tokens", "vocabulary", "words")

    def __init__(self, text: str) -> None:
        text = normalize_arabic(_COMBINING.sub("", text))
        if _INDIC_DIGIT.search(text):  # str.translate is slow on any text that is not ASCII
            text = text.translate(_DIGITS)
        pairs = _FACT_TOKEN.findall(text)[:MAX_WORDS]
        self.gaps, self.tokens = zip(*pairs) if pairs else ((), ())
        self.words = words = list(map(str.casefold, self.tokens))
        for k, token in enumerate(self.tokens):
            if token[0].isdigit():  # 43,391 is 43391, 03 is 3
                words[k] = _NOT_DIGIT.sub("", token).lstrip("0") or "0"
        vocabulary = set(words)
        vocabulary.update(_NUMBER_WORDS[word] for word in vocabulary & _NUMBER_WORDS.keys())
        self.vocabulary = vocabulary
        self.grams = grams = list(zip(*(words[i:] for i in range(SHINGLE_WORDS))))
        # Reversed, so that the first occurrence of a repeated 5-gram is the one kept.
        self.shingles = dict(zip(reversed(grams), range(len(grams) - 1, -1, -1)))
        self._skeletons: set[str] | None = None

    def has(self, fact: str) -> bool:
        """Whether the text has ``fact`` anywhere, a Latin name in another spelling too."""
        if fact in self.vocabulary:
            return True
        if not (fact.isascii() and fact.isalpha()) or len(skeleton := _skeleton(fact)) < 2:
            return False
        if self._skeletons is None:
            self._skeletons = {
                _skeleton(word) for token, word in zip(self.tokens, self.words, strict=True)
                if token[0].isupper() and word.isascii()
            }
        return skeleton in self._skeletons

    def starts(self, k: int) -> bool:
        """Whether word ``k`` opens a sentence (not after "U.S.": an initial goes on)."""
        if k == 0 or k == len(self.words):
            return True
        previous = self.tokens[k - 1]
        initial = len(previous) == 1 and previous.isalpha()
        return not initial and _SENTENCE_END.search(self.gaps[k]) is not None

    def fact(self, k: int) -> str | None:
        """Word ``k`` as a fact (numbers as digits), or None if it is not one."""
        token, word = self.tokens[k], self.words[k]
        if token[0].isdigit():
            return word
        if word in _NUMBER_WORDS:
            return _NUMBER_WORDS[word]
        if token[0].isupper():
            return None if self.starts(k) else word
        if word in _ARABIC_CALENDAR or (k > 0 and _names_follow(self.words[k - 1])):
            return word
        return None

    def sentences(self, gap: range) -> bool:
        """Whether the words of ``gap``, followed by an anchor, are whole sentences."""
        return self.starts(gap.start) and self.starts(gap.stop)


def _skeleton(word: str) -> str:
    return _DOUBLED.sub(r"\1", _VOWELS.sub("", word))


def _names_follow(word: str) -> bool:
    return word in _ARABIC_NAME_CUES or (word[:1] in "وبلف" and word[1:] in _ARABIC_NAME_CUES)


def differing_facts(a: str, b: str) -> tuple[set[str], set[str]]:
    """The facts (numbers, names, dates) each text states where the other says something else.

    Reasoning in the module docstring, "Templated releases"; numbers come back as digits,
    words case folded and with Arabic letter forms folded.
    """
    return _differing(_Facts(a), _Facts(b))


def _differing(a: _Facts, b: _Facts) -> tuple[set[str], set[str]]:
    anchors: list[tuple[int, int]] = []
    last = -1
    shingles = b.shingles
    for i, gram in enumerate(a.grams):
        j = shingles.get(gram, -1)
        if j > last:
            anchors.append((i, j))
            last = j
    only_a: set[str] = set()
    only_b: set[str] = set()
    for (i, j), (next_i, next_j) in zip(anchors, anchors[1:]):
        gap_a = range(i + SHINGLE_WORDS, next_i)
        gap_b = range(j + SHINGLE_WORDS, next_j)
        # Each says something in place of the other, within a sentence: a whole line each
        # (two outlets' "read also" links at one paragraph break) is not a template's slot.
        if gap_a and gap_b and not (a.sentences(gap_a) and b.sentences(gap_b)):
            only_a.update(_missing(a, gap_a, b))
            only_b.update(_missing(b, gap_b, a))
    return only_a, only_b


def _missing(text: _Facts, gap: range, other: _Facts) -> set[str]:
    """The facts among ``text``'s words in ``gap`` that ``other`` nowhere has."""
    return {fact for k in gap if (fact := text.fact(k)) is not None and not other.has(fact)}


def same_facts(a: str, b: str) -> bool:
    """False when two texts, however alike, report different events (templated releases)."""
    return min(map(len, differing_facts(a, b))) < MIN_DIFFERING_FACTS


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
    text: str | None

    @cached_property
    def facts(self) -> _Facts | None:
        """Read once per batch, and only for a pair whose signatures match."""
        return None if self.text is None else _Facts(self.text)


def assign_cluster(
    session: Session,
    article_id: int,
    text: str | None,
    when: datetime,
    settings: ClusterSettings = ClusterSettings(),
) -> int:
    """Give one article its story cluster and index its bands; returns the cluster id.

    The cluster heads' texts are read from their rows: ``text`` should be what the article's row
    holds, or will hold by the end of the transaction, as the ingest writes them together."""
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
        for head_id, head_sig, head_count, head_when, head_text in session.execute(
            select(
                Article.id, Article.minhash, Article.shingle_count, Article.story_at, Article.text
            ).where(Article.id.in_(chunk), Article.minhash.is_not(None))
        ):
            heads[head_id] = _Head(from_bytes(head_sig), head_count, head_when, head_text)

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
        placed_head = _Head(sig, count, item.when, item.text)
        best = article_id
        if candidates and article_id not in leaders:
            best = _closest(placed_head, candidates, cluster_of, heads, settings) or article_id
        cluster_of[article_id] = best
        if best != article_id:
            leaders.add(best)  # should the head come later in the batch, it stays where it is
        heads[article_id] = placed_head
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
    article: _Head,
    candidates: set[int],
    cluster_of: dict[int, int],
    heads: dict[int, _Head],
    settings: ClusterSettings,
) -> int | None:
    """The cluster whose first article this text copies, within the window; None if none does.

    Comparing with each cluster's first article, not with any member, keeps clusters from
    chaining: a run of similar but different stories (templated releases a few days apart) would
    otherwise merge step by step into one cluster spanning weeks. A head whose signature matches
    but whose facts differ (module docstring) is passed over for the next best.
    """
    when = article.when
    matches: list[tuple[tuple[int, float], int]] = []
    for head_id in {cluster_of.get(c) or c for c in candidates}:
        head = heads.get(head_id)
        if head is None or not (when - settings.window <= head.when <= when + settings.window):
            continue
        rank = match_rank(
            article.sig, article.shingle_count, head.sig, head.shingle_count, settings
        )
        if rank is not None:
            matches.append((rank, head_id))
    # Best rank first; ties: the oldest cluster.
    for _, head_id in sorted(matches, key=lambda match: (-match[0][0], -match[0][1], match[1])):
        head_facts, facts = heads[head_id].facts, article.facts
        if head_facts is None or facts is None:  # a head stored without its text
            return head_id
        if min(map(len, _differing(facts, head_facts))) < MIN_DIFFERING_FACTS:
            return head_id
    return None


def _chunks(values: Sequence[int], size: int = 500) -> list[Sequence[int]]:
    # Bounded IN lists: SQLite allows 32,766 parameters per statement, PostgreSQL 65,535.
    return [values[i : i + size] for i in range(0, len(values), size)]
