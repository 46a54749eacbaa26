"""Topic tagging: which of the analysts' topics an article is about, and why.

The rules live in YAML files that analysts read and edit (``marsad/taxonomy/``: ``topics.yaml``,
``places.yaml``, ``actors.yaml``; the format is described at the top of ``topics.yaml``). Loading
them builds a :class:`Tagger`; malformed files raise :class:`~marsad.errors.TaxonomyError` naming
the file, the line and the place (``topics.coalition.terms[3]: weight must be a number``).

Tagging is explainable: every topic carries the matched terms as the article writes them, with
character offsets into the *original* title or text (``term == text[start:end]``, Arabic prefixes
and diacritics included; :meth:`Tagger.explain` also names the taxonomy entry), and the taxonomy
version that produced it: the declared ``version`` when the files are that version's release
(:data:`RELEASED_FINGERPRINTS`), else ``<version>+local.<fingerprint>``.

How a text is matched (about 0.1 ms for a 4.5 KB news article, 0.2 ms for one of the beat with
fifty hits; benchmarks/tagging.py measures it)
  1. Project the text to bytes, one byte per character so offsets survive (:func:`_project`):
     letters lower-cased and folded (Türkiye -> turkiye; أ إ آ -> ا, ة -> ه, ى -> ي), everything
     else a space, so every word starts after a space; diacritics, tatweel and other invisible
     marks are deleted and a list of the deletions maps offsets back. Two C-level passes
     (an encoding and bytes.translate), no per-character Python.
  2. One regular expression per script finds the phrases of every group at once: topics' terms,
     support words and exclusions, context words, places and actors. Terms are compiled into a
     character trie behind a literal space, so the engine jumps from word to word; Arabic stems
     enter the trie once per clitic prefix (و ف ب ل ال). Latin-only text never runs the Arabic
     expression and vice versa; the Arabic one is compiled on first use. Neither expression is
     run after every space but where an Aho-Corasick automaton of its phrases finds one
     (:mod:`marsad._match`), with the same matches; a title and a text in Latin script are
     searched in one pass.
  3. A matched phrase is identified once and cached: the entry of each group it stands for
     (Arabic article, attached pronouns and capitals checked), and the phrases of other groups
     inside it ("Syrian Democratic Forces" is the actor SDF and the place Syria).
  4. Context rules, exclusions and weights turn the hits into a score per topic. A context is
     indexed once per article, the first time a hit asks for it; a sentence context looks for
     the end of a sentence only between a hit and the words (or years) near it.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import accumulate
from operator import itemgetter, sub
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml

from marsad._match import PhraseFinder
from marsad.errors import TaxonomyError

__all__ = [
    "BUNDLED_TAXONOMY",
    "TOPICS",
    "Evidence",
    "TagResult",
    "Tagger",
    "TopicTag",
    "get_tagger",
    "normalize_arabic",
]

TOPICS = ("isis", "coalition", "regional_cooperation")
BUNDLED_TAXONOMY = Path(__file__).parent / "taxonomy"

# The fingerprint (:attr:`Tagger.fingerprint`: of the files' content, not of their comments or
# layout) of each released taxonomy version. Every stored tag records the version that gave it,
# so a version must name one set of rules: a taxonomy whose rules differ from the release of its
# declared version (edited without bumping ``version``, or never released) tags as
# "<version>+local.<first 8 characters of its fingerprint>". Bumping the bundled taxonomy's
# version means adding its fingerprint here (a test checks it).
RELEASED_FINGERPRINTS = {
    "2.2": "ccdfc12ff8dc",
    "2.3": "f3c0e14b0222",
    "2.4": "7f5b98b85194",
    "2.5": "c965516c170b",
}
VERSION_MAX_CHARS = 16  # + "+local.<8>" fits the 32 characters stored with each tag

# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """One matched term: ``term`` is the text matched, as the field writes it (``field[start:end]``:
    "Daesh", "بالتحالف"); ``field`` is "title" or "text"; offsets index the original string.
    ``rule`` is the taxonomy entry that matched ("raid" for "arrested"): shown by
    :meth:`Tagger.explain`, not stored (the stored evidence is ``{term, field, start, end}``)."""

    term: str
    field: str
    start: int
    end: int
    rule: str = field(default="", compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"term": self.term, "field": self.field, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class TopicTag:
    topic: str
    score: float
    evidence: tuple[Evidence, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "score": self.score,
            "evidence": [e.to_dict() for e in self.evidence],
        }


@dataclass(frozen=True)
class TagResult:
    topics: tuple[TopicTag, ...]
    places: tuple[str, ...]
    actors: tuple[str, ...]

    @property
    def topic_names(self) -> tuple[str, ...]:
        return tuple(t.topic for t in self.topics)

    def to_dict(self) -> dict[str, Any]:
        return {
            "topics": [t.to_dict() for t in self.topics],
            "places": list(self.places),
            "actors": list(self.actors),
        }


_Result = TypeVar("_Result", Evidence, TopicTag, TagResult)


_new = object.__new__


def _frozen(cls: type[_Result], **fields: Any) -> _Result:
    """A result built without its dataclass __init__, which sets each field through
    object.__setattr__ (they are frozen): that made building an article's evidence cost more
    than scoring it. The classes have no __post_init__ to miss."""
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------


def _chars(*ranges: tuple[int, int]) -> list[str]:
    return [chr(cp) for lo, hi in ranges for cp in range(lo, hi + 1)]


_ARABIC_LETTER_FOLD = {
    "أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ٲ": "ا", "ٳ": "ا",
    "ة": "ه", "ى": "ي", "ؤ": "و", "ئ": "ي",
    "ی": "ي", "ک": "ك",  # Persian yeh and kaf, common in copied text
}  # fmt: skip
# Harakat, Quranic marks, superscript alef, tatweel.
_ARABIC_DELETE = _chars(
    (0x0610, 0x061A), (0x064B, 0x065F), (0x0670, 0x0670), (0x06D6, 0x06DC), (0x06DF, 0x06E8),
    (0x06EA, 0x06ED), (0x0640, 0x0640),
)  # fmt: skip
# Soft hyphen, zero-width characters, word joiner, BOM: invisible inside a word.
_INVISIBLE_DELETE = _chars((0x00AD, 0x00AD), (0x200B, 0x200D), (0x2060, 0x2060), (0xFEFF, 0xFEFF))


def _runs_of(chars: Iterable[str]) -> re.Pattern[str]:
    """An expression for runs of these characters: to delete them from a whole text in C, where
    str.translate would look every character of a non-ASCII string up in a dict."""
    return re.compile("[" + "".join(map(re.escape, sorted(chars))) + "]+")


_ARABIC_FOLDED = re.compile("[\u0610-\u06ed]")  # every character the fold changes is in here
_ARABIC_MARK_RUNS = _runs_of(_ARABIC_DELETE)


def normalize_arabic(text: str) -> str:
    """Fold Arabic spelling variants the way matching does.

    Hamza and alef forms (أ إ آ ٱ) become ا, ة becomes ه, ى becomes ي, ؤ and ئ become و and ي;
    diacritics and tatweel are removed. Other characters are left alone.
    """
    # Not str.translate: on a string that is not ASCII it looks every character up in a dict,
    # about 250 us for 5 KB, even of English with curly quotes; these passes run in C.
    if text.isascii() or not _ARABIC_FOLDED.search(text):
        return text
    text = _ARABIC_MARK_RUNS.sub("", text)
    for letter, folded in _ARABIC_LETTER_FOLD.items():
        if letter in text:
            text = text.replace(letter, folded)
    return text


# How the matcher sees text: a projection
# -----------------------------------------
# Every title and text is turned into bytes, one byte per character so that offsets survive:
# letters lower-cased, accented Latin letters folded to their base letter (Türkiye -> turkiye),
# Arabic letter variants folded (أ إ آ ٱ -> ا, ة -> ه, ى ئ -> ي, ؤ -> و), everything else a
# space. Invisible marks (diacritics, tatweel, soft hyphens, zero-width joiners) become \x01 and
# are then deleted, with a map back to original offsets. Every word therefore starts after a
# space, so the regular expression engine jumps from space to space (a literal prefix) instead
# of testing every character, and the terms need no character classes.
#
# Building the projection costs two C-level passes: Latin-only text is encoded as Latin-1 ("?"
# for anything else) and put through one bytes.translate; text with Arabic letters is first
# encoded with a private one-byte code page (codecs.charmap_encode) that gives every Arabic and
# Latin-1 letter its own byte.

_MARK = 1  # byte of a deleted mark


def _code_page() -> str:
    """The private code page: byte -> character (ASCII, Latin-1 letters, Arabic letters, marks)."""
    chars = [chr(c) for c in range(0x80)]
    chars += [chr(c) for c in range(0xC0, 0x100) if c not in (0xD7, 0xF7)]
    chars += ["\u00ad", "ı", "İ", "ş", "Ş", "ğ", "Ğ"]
    chars += [chr(c) for c in range(0x0621, 0x0653)] + ["\u0670", "\u0671", "ی", "ک"]
    chars += ["\u200b", "\u200c", "\u200d"]
    assert len(chars) <= 256 and len(set(chars)) == len(chars)
    return "".join(chars) + "\ufffe" * (256 - len(chars))  # \ufffe: not mapped


_CODE_PAGE = _code_page()
_ENCODING_MAP = codecs.charmap_build(_CODE_PAGE)
_MARK_CHARS = frozenset(_ARABIC_DELETE + _INVISIBLE_DELETE)


def _byte_of(ch: str) -> int:
    """The projection byte of one character."""
    if ch in _MARK_CHARS:
        return _MARK
    ch = _ARABIC_LETTER_FOLD.get(ch, ch)
    if "\u0620" <= ch <= "\u06ff":
        return _CODE_PAGE.index(ch) if ch in _CODE_PAGE else 32
    base = unicodedata.normalize("NFKD", ch.replace("ı", "i"))[:1].lower()
    return ord(base) if base.isascii() and base.isalnum() else 32


def _tables() -> tuple[bytes, bytes]:
    latin1 = bytes(_byte_of(chr(c)) for c in range(256))
    private = bytes(_byte_of(ch) if ch != "\ufffe" else 32 for ch in _CODE_PAGE)
    return latin1, private


_LATIN1_TABLE, _PRIVATE_TABLE = _tables()
_LATIN_EXTRA = (("ı", "i"), ("İ", "I"), ("ş", "s"), ("Ş", "S"), ("ğ", "g"), ("Ğ", "G"))
_NOT_LATIN_LETTER = bytes(c for c in range(256) if not 0x61 <= c <= 0x7A)
_AR_LETTER = re.compile("[\u0620-\u064a\u066e-\u06d3\u06fa-\u06ff]")
_AR_COMMON = "\u0627\u0644\u064a\u0646\u0648"  # ا ل ي ن و: at least one in any Arabic sentence
_DELETE_MARKS = str.maketrans(dict.fromkeys(_MARK_CHARS))  # for short strings
_MARK_RUNS = _runs_of(_MARK_CHARS)  # for a whole field: 2 KB of Arabic in 20 us, not 120
_MARK_RX = re.compile(b"\x01")


def _has_arabic(text: str) -> bool:
    for c in _AR_COMMON:
        if c in text:
            return True
    return len(text) < 2000 and _AR_LETTER.search(text) is not None


def _project(text: str, arabic: bool) -> bytes:
    """The projection of a text (same length; marks not yet deleted)."""
    if text.isascii():
        return text.encode("ascii").translate(_LATIN1_TABLE)
    if arabic:
        return codecs.charmap_encode(text, "replace", _ENCODING_MAP)[0].translate(_PRIVATE_TABLE)
    for c, r in _LATIN_EXTRA:
        if c in text:
            text = text.replace(c, r)
    return text.encode("latin-1", "replace").translate(_LATIN1_TABLE)


def _key_text(text: str) -> str:
    """The projection of a short text, as a str of Latin-1 characters (marks deleted)."""
    arabic = not text.isascii() and _has_arabic(text)
    return _project(text, arabic).replace(b"\x01", b"").decode("latin-1")


def _key(text: str) -> str:
    """A phrase as the matcher sees it: "U.S.-led" -> "u s led", "بالتحالف" folded, marks
    removed; a str of Latin-1 characters standing for projection bytes."""
    return " ".join(_key_text(text).split())


_AR_ALEF = _key("ا")
_AR_ARTICLE = _key("ال")
_AR_HEH, _AR_TEH = _key("ه"), _key("ت")
# Attached clitics: conjunction و/ف, then preposition ب/ل and the article ال (ل + ال is written
# لل). The preposition ك (like) is left out: rare before names, and every prefix enlarges the trie.
_AR_CONJUNCTIONS = _key("و ف").split()
_AR_INNER_PREFIXES = tuple(_key(p) for p in ("", "ال", "بال", "لل", "ب", "ل"))
_AR_INNER_ARTICLE_PREFIXES = tuple(_key(p) for p in ("ال", "بال", "لل"))
_AR_PLAIN_PREFIXES = tuple(_key(p) for p in ("", "ب", "ل"))
_AR_ARTICLE_ENDS = (_AR_ARTICLE, _key("لل"))
_AR_PREFIXES = sorted(
    {c + m for c in ("", *_AR_CONJUNCTIONS) for m in _AR_INNER_PREFIXES}, key=lambda p: (len(p), p)
)
# Attached pronouns (its, their, our): قواته، خلاياها، عناصرهم. ة becomes ت before them (خليته).
_AR_SUFFIXES = tuple(_key(s) for s in ("هما", "هم", "هن", "ها", "نا", "ه"))
_ARABIC_MARK_TAIL = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u0640]+$")


class _Field:
    """A title or text prepared for matching: ``projection`` (b" " + the projection, marks
    deleted), and :meth:`orig` to map its offsets back to the text."""

    __slots__ = ("_shift", "arabic", "index", "name", "projection", "text")

    def __init__(self, name: str, index: int, text: str) -> None:
        self.name = name
        self.index = index
        self.text = text
        self.arabic = not text.isascii() and _has_arabic(text)
        projection = _project(text, self.arabic)
        self._shift: list[int] | None = None
        if b"\x01" in projection:
            # For the j-th deleted character at original position d, d - j characters were kept
            # before it, so clean position i sits at i + #{j : d_j - j <= i}.
            deleted = [m.start() for m in _MARK_RX.finditer(projection)]
            self._shift = [d - j for j, d in enumerate(deleted)]
            projection = projection.replace(b"\x01", b"")
        self.projection = b" " + projection

    def orig(self, i: int) -> int:
        """Original offset of a clean offset (an end offset keeps trailing marks)."""
        if self._shift is None:
            return i
        return i + bisect_right(self._shift, i)

    @property
    def clean(self) -> str:
        """The text without its marks (``projection`` minus the leading space, as text)."""
        return self.text if self._shift is None else _MARK_RUNS.sub("", self.text)


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------

_CACHE_SIZE = 50_000  # identified surfaces remembered; surfaces repeat a lot across articles
_END, _WILD, _SUFFIX, _SUFFIX_REQUIRED = 1, 2, 4, 8


@dataclass(frozen=True, eq=False)
class _Entry:
    """One taxonomy entry: a topic term, support word, exclusion, place, actor or context word."""

    label: str
    role: str  # "term" | "support" | "exclude" | "place" | "actor" | "context"
    where: str
    group: str  # "topic:isis", "places", "actors", "context:talks": who counts the hit
    weight: float = 1.0
    needs: tuple[str, ...] = ()  # contexts that must all pass for this term to count
    country: str | None = None
    unless: tuple[str, ...] = ()  # contexts none of which may pass
    members: frozenset[str] = frozenset()  # a bloc of states (GCC): counts as each of them
    countries: frozenset[str] = frozenset()  # the states a place counts as in country contexts
    # Derived, for the tagger's inner loop:
    conditional: bool = field(init=False, repr=False)  # it has needs or unless to check
    vouches: bool = field(init=False, repr=False)  # an anchor that topic_terms contexts count
    bucket: str = field(init=False, repr=False)  # the list of hits the tagger files it in

    def __post_init__(self) -> None:
        if not self.countries and (self.members or self.country):
            countries = self.members or frozenset((self.country,))
            object.__setattr__(self, "countries", countries)
        object.__setattr__(self, "conditional", bool(self.needs or self.unless))
        object.__setattr__(self, "vouches", self.role == "term" and not self.needs)
        object.__setattr__(self, "bucket", _bucket(self.group, self.role))


def _bucket(group: str, role: str) -> str:
    """Hits are filed by group, a topic's support words and exclusions apart from its terms."""
    return f"{group} {role}" if role in ("support", "exclude") else group


@dataclass(frozen=True, eq=False)
class _Form:
    """One spelling of an entry as the matcher sees it."""

    entry: _Entry
    article: bool = False  # Arabic term written with ال: the text must have the article too
    suffix: bool = False  # Arabic: attached pronouns accepted (قواته)
    case_rx: re.Pattern[str] | None = None  # capitals of the term must be capitals in the text

    def accepts(self, surface: str, has_article: bool, suffixed: bool) -> bool:
        if self.article and not has_article:
            return False
        if suffixed and not self.suffix:
            return False
        return self.case_rx is None or self.case_rx.fullmatch(surface) is not None


_Found = tuple[_Entry, str, int, int]  # a phrase inside a matched one: entry, bucket, offsets


class _Lexicon:
    """Every spelling of every entry (topics, contexts, places, actors), matched in one pass.

    Latin and Arabic spellings each go into a character trie compiled into one regular
    expression. A match is the longest phrase at the leftmost position, whichever group it
    belongs to; the surface is then identified once (and cached): the entries it is for, and, for
    groups that have no entry for the whole phrase, their phrases inside it ("Syrian Democratic
    Forces" is the actor SDF and, through "Syrian", the place Syria).
    """

    def __init__(self) -> None:
        self._exact: dict[str, list[_Form]] = {}  # key -> forms
        self._wild: dict[str, list[_Form]] = {}
        self._min_wild = 1 << 30
        self._latin_trie: dict = {}
        self._arabic_trie: dict = {}
        self._patterns: list[tuple[re.Pattern[str], _Entry]] = []
        self._seen: dict[tuple, _Entry] = {}
        self._inflected: dict[tuple, _Form] = {}  # forms made by _arabic_inflections
        self._weak: dict[_Entry, _Entry] = {}
        self.inner_weight = 1.0
        self._cache: dict[str | bytes, tuple[_Found, ...]] = {}
        self._latin_rx: re.Pattern[bytes] | None = None
        self._latin_phrases: list[tuple[str, bool]] = []  # key, wildcard: what _latin_rx matches
        self._latin_finder: PhraseFinder | None = None
        self._arabic_finder: PhraseFinder | None = None
        self._sources: dict[str, Callable[[], bytes]] = {}
        self._lazy: dict[str, re.Pattern[bytes]] = {}

    # -- building ---------------------------------------------------------------------------

    def add_literal(
        self, raw: str, entry: _Entry, case_sensitive: bool, inflect: bool
    ) -> str | None:
        """Add one spelling; returns a problem description, or None. ``inflect``: an Arabic
        topic word, which also matches its inflected forms (see :func:`_arabic_inflections`)."""
        s = raw.strip()
        wildcard = s.endswith("*")
        if wildcard:
            s = s[:-1].rstrip()
        if "*" in s:
            return "'*' is only allowed at the end of a term"
        key = _key(s)
        if not key:
            return "the term is empty"
        first = re.search(r"[^\W_]", s)
        arabic = first is not None and _AR_LETTER.match(first.group()) is not None
        article = arabic and key.startswith(_AR_ARTICLE) and len(key.split(" ")[0]) > 3
        if article:
            key = key[len(_AR_ARTICLE) :]
        case_rx = _case_rx(s, wildcard) if case_sensitive and not arabic else None
        ident = (entry.group, key, wildcard, article, case_rx.pattern if case_rx else None)
        if ident in self._inflected:  # an explicit spelling wins over an inflected form
            form = self._inflected.pop(ident)
            self._exact[key].remove(form)
            del self._seen[ident]
        if ident in self._seen:
            other = self._seen[ident]
            if other is entry:
                return None  # two spellings of one entry that match alike ("Türkiye", "Turkiye")
            return f"{raw!r} is listed twice (also at {other.where})"
        self._seen[ident] = entry
        if not arabic:
            self._insert(key, _Form(entry, case_rx=case_rx), wildcard, latin=True)
            return None
        marbuta = _ARABIC_MARK_TAIL.sub("", s).endswith("ة")
        self._insert_arabic(key, entry, article, wildcard, inflect, marbuta)
        if inflect and not wildcard:
            for variant, variant_article in _arabic_inflections(key, article):
                ident = (entry.group, variant, False, variant_article, None)
                if ident not in self._seen:  # an explicit spelling wins
                    self._seen[ident] = entry
                    self._inflected[ident] = self._insert_arabic(
                        variant, entry, variant_article, False, inflect, False
                    )
        return None

    def _insert_arabic(
        self, key: str, entry: _Entry, article: bool, wildcard: bool, inflect: bool, marbuta: bool
    ) -> _Form:
        suffix = inflect and not wildcard and not article and " " not in key
        form = _Form(entry, article, suffix)
        self._insert(key, form, wildcard, latin=False)
        flag = _WILD if wildcard else _SUFFIX if suffix else _END
        for prefix in _AR_INNER_ARTICLE_PREFIXES if article else _AR_INNER_PREFIXES:
            plain = prefix in _AR_PLAIN_PREFIXES  # no article: a pronoun may follow
            _trie_add(self._arabic_trie, prefix + key, flag if plain else flag & ~_SUFFIX | _END)
            if suffix and plain and marbuta:
                _trie_add(self._arabic_trie, prefix + key[:-1] + _AR_TEH, _SUFFIX_REQUIRED)
        return form

    def _insert(self, key: str, form: _Form, wildcard: bool, *, latin: bool) -> None:
        (self._wild if wildcard else self._exact).setdefault(key, []).append(form)
        if wildcard:
            self._min_wild = min(self._min_wild, len(key))
        if latin:
            _trie_add(self._latin_trie, key, _WILD if wildcard else _END)
            self._latin_phrases.append((key, wildcard))

    def add_pattern(self, raw: str, entry: _Entry, case_sensitive: bool) -> str | None:
        if "(?-i" in raw:
            return "pattern must not switch case sensitivity off inside; use case: sensitive"
        try:
            rx = re.compile(raw, 0 if case_sensitive else re.IGNORECASE)
        except re.error as exc:
            return f"pattern is not a valid regular expression: {exc}"
        if rx.groups:
            return "pattern must not contain capturing groups; write (?:...) instead of (...)"
        if rx.fullmatch(""):
            return "pattern matches the empty string"
        try:
            bounded = re.compile(rf"(?<!\w)(?:{raw})(?!\w)", rx.flags)
        except re.error as exc:  # e.g. a pattern with inline global flags
            return f"the pattern cannot be used between word boundaries: {exc}"
        self._patterns.append((bounded, entry))
        return None

    def compile(self) -> None:
        """Build the expressions. The Latin one is compiled now; the Arabic one (the largest:
        every stem behind every prefix) and the one for Latin words in Arabic texts are compiled
        when first needed, so that English-only runs do not wait for them."""
        end = rb"(?![0-9a-z\x80-\xff])"
        if self._latin_trie:
            body = _emit(self._latin_trie, "[a-z0-9]*").encode("latin-1")
            self._latin_rx = re.compile(rb" (?:" + body + rb")" + end)
            self._latin_finder = PhraseFinder(self._latin_phrases, self._latin_rx)
            # For mostly Arabic texts, whose projection has few Latin letters: jump from letter
            # to letter (the expression starts with a set of first letters) instead.
            self._sources["latin_sparse"] = lambda: rb"(?:" + body + rb")" + end
        if self._arabic_trie:
            trie, conj = self._arabic_trie, "[" + "".join(_AR_CONJUNCTIONS) + "]?"
            self._sources["arabic"] = lambda: (
                b" " + (conj + "(?:" + _emit(trie, "[\x80-\xff]*") + ")").encode("latin-1") + end
            )
            # Arabic words are short, and the expression is tried after every space: Arabic
            # texts are searched with an automaton too (built on the first Arabic text).
            self._arabic_finder = PhraseFinder(
                lambda: _arabic_phrases(trie), lambda: self._compiled("arabic"), high=True
            )
        self._latin_trie = self._arabic_trie = {}  # no longer needed

    def _compiled(self, name: str) -> re.Pattern[bytes]:
        rx = self._lazy.get(name)
        if rx is None:
            rx = self._lazy[name] = re.compile(self._sources[name]())
        return rx

    # -- matching ---------------------------------------------------------------------------

    def scan_article(self, title: _Field, text: _Field, groups: _Groups) -> None:
        """Append the hits of a title and a text to the lists of their groups (title first, then
        in text order). Neither Arabic, as most are: one pass over both, joined by " |" (no
        phrase goes on past it), which saves the title a pass of its own."""
        finder = self._latin_finder
        if title.arabic or text.arabic or finder is None or self._patterns:
            self.scan(title, groups)
            self.scan(text, groups)
        elif len(title.projection) < 2:
            self.scan(text, groups)
        else:
            at = len(title.projection) + 2
            spans = finder.spans(title.projection + b" |" + text.projection)
            self._scan(spans, title, groups, text, at)

    def scan(self, fld: _Field, groups: _Groups) -> None:
        """Append the hits of a field to the lists of their groups, in text order, with clean
        offsets."""
        projection = fld.projection
        if len(projection) < 2:
            return
        sizes = None  # the groups' sizes before this field, when its hits need sorting
        if not fld.arabic:
            if self._latin_finder is not None:
                self._scan(self._latin_finder.spans(projection), fld, groups)
        else:
            latin_letters = len(projection.translate(None, _NOT_LATIN_LETTER))
            if self._latin_finder is not None and latin_letters:
                # Mostly Latin with some Arabic: jump from space to space; mostly Arabic:
                # from Latin letter to Latin letter.
                sizes = {g: len(group) for g, group in groups.items()}
                mostly_latin = latin_letters * 3 > len(projection)
                if mostly_latin:
                    spans = self._latin_finder.spans(projection)
                else:
                    # The sparse expression has no leading space: a match inside a word is
                    # skipped (but still ends the search there, as it always has).
                    sparse = self._compiled("latin_sparse").finditer(projection)
                    spans = {
                        m.start() - 1: m.end() for m in sparse if projection[m.start() - 1] == 32
                    }
                self._scan(spans, fld, groups)
            if self._arabic_finder is not None:
                self._scan_arabic(fld, groups)
        if self._patterns:
            if sizes is None:
                sizes = {g: len(group) for g, group in groups.items()}
            self._scan_patterns(fld, groups)
        if sizes is not None:
            # Phrases of both scripts, or patterns: one pass each, merged by start (stably, so
            # that sorting each group alone orders it as sorting all the hits would).
            for g, group in groups.items():
                k = sizes.get(g, 0)
                if len(group) - k > 1:
                    group[k:] = sorted(group[k:], key=_hit_start)

    def _scan(
        self,
        spans: dict[int, int],
        fld: _Field,
        groups: _Groups,
        then: _Field | None = None,
        at: int = 0,
    ) -> None:
        """Latin phrases: identified by their surface, whose capitals matter. ``spans`` maps the
        start of each match of the Latin expression (the space before the phrase) to its end,
        in ``fld``'s projection, or with ``then`` in it and, from ``at`` on, in ``then``'s."""
        cache = self._cache
        text, fi = fld.text, fld.index
        shifted = fld._shift is not None
        base = 0
        switch = at if then is not None else 1 << 62
        for start, end in spans.items():
            if start >= switch:  # past the title: the text
                assert then is not None
                fld, base, switch = then, at, 1 << 62
                text, fi, shifted = fld.text, fld.index, fld._shift is not None
            # projection = b" " + the clean projection: projection[i + 1] is clean[i].
            start -= base
            end -= base + 1
            surface = text[fld.orig(start) : fld.orig(end)] if shifted else text[start:end]
            found = cache.get(surface)
            if found is None:
                clean = surface if surface.isascii() else surface.translate(_DELETE_MARKS)
                found = self._identify(_key_text(clean), clean)
                if len(cache) >= _CACHE_SIZE:
                    cache.clear()
                cache[surface] = found
            for entry, bucket, a, b in found:
                groups[bucket].append((entry, fi, start + a, start + b))

    def _scan_arabic(self, fld: _Field, groups: _Groups) -> None:
        """Arabic phrases: identified by their projection, which says all there is to say."""
        cache = self._cache
        projection, fi = fld.projection, fld.index
        assert self._arabic_finder is not None
        for start, end in self._arabic_finder.spans(projection).items():
            end -= 1
            key = projection[start + 1 : end + 1]
            found = cache.get(key)
            if found is None:
                found = self._identify(key.decode("latin-1"), "")
                if len(cache) >= _CACHE_SIZE:
                    cache.clear()
                cache[key] = found
            for entry, bucket, a, b in found:
                groups[bucket].append((entry, fi, start + a, start + b))

    def _scan_patterns(self, fld: _Field, groups: _Groups) -> None:
        clean, fi = fld.clean, fld.index
        for rx, entry in self._patterns:
            found = [(entry, fi, m.start(), m.end()) for m in rx.finditer(clean)]
            groups[entry.bucket].extend(found)

    # -- identifying a matched surface ------------------------------------------------------

    def _identify(self, projection: str, clean: str) -> tuple[_Found, ...]:
        """The entries a matched phrase stands for, with offsets inside it. ``projection`` is
        its projection as text, ``clean`` its surface without marks (for the capitals)."""
        spans = [m.span() for m in re.finditer(r"\S+", projection)]
        words = [projection[a:b] for a, b in spans]
        if not spans:
            return ()

        def lookup(i: int, j: int) -> dict[str, _Entry]:
            return self._lookup(" ".join(words[i : j + 1]), clean[spans[i][0] : spans[j][1]])

        n = len(spans)
        whole = lookup(0, n - 1)
        out = [(entry, spans[0][0], spans[-1][1]) for entry in whole.values()]
        if n > 1:
            # Phrases of other groups inside this one, leftmost-longest per group, as if each
            # group had been matched on its own.
            inner = {(i, j): lookup(i, j) for i in range(n) for j in range(i, n)}
            groups = {g for d in inner.values() for g in d} - set(whole)
            for g in sorted(groups):
                i = 0
                while i < n:
                    for j in range(n - 1 if i else n - 2, i - 1, -1):
                        entry = inner[(i, j)].get(g)
                        if entry is not None:
                            out.append((self._inner(entry), spans[i][0], spans[j][1]))
                            i = j + 1
                            break
                    else:
                        i += 1
        out.sort(key=lambda h: (h[1], -h[2]))
        return tuple((entry, entry.bucket, a, b) for entry, a, b in out)

    def _inner(self, entry: _Entry) -> _Entry:
        """A topic term inside another group's name weighs ``inner_weight`` times its weight:
        ISIS inside "Global Coalition to Defeat ISIS" is mostly the coalition's name, and
        "counter-terrorism" inside an agency's name is no cooperation."""
        if not entry.group.startswith("topic:") or self.inner_weight == 1:
            return entry
        weak = self._weak.get(entry)
        if weak is None:
            weak = self._weak[entry] = replace(entry, weight=entry.weight * self.inner_weight)
        return weak

    def _lookup(self, key: str, surface: str) -> dict[str, _Entry]:
        found: dict[str, _Entry] = {}  # group -> entry
        if key[0] < "\x80":  # Latin
            self._lookup_exact(key, surface, False, False, found)
            self._lookup_wild(key, surface, False, found)
            return found
        for prefix in _AR_PREFIXES:  # shortest first: the literal reading wins
            if len(key) <= len(prefix) + 1 or not key.startswith(prefix):
                continue
            stem = key[len(prefix) :]
            article = prefix.endswith(_AR_ARTICLE_ENDS)
            self._lookup_exact(stem, "", article, False, found)
            self._lookup_wild(stem, "", article, found)
            if article:
                continue  # the article and an attached pronoun never go together
            for suffix in _AR_SUFFIXES:
                if stem.endswith(suffix) and len(stem) - len(suffix) >= 2:
                    base = stem[: -len(suffix)]
                    self._lookup_exact(base, "", False, True, found)
                    if base.endswith(_AR_TEH):
                        self._lookup_exact(base[:-1] + _AR_HEH, "", False, True, found)
        return found

    def _lookup_exact(
        self, key: str, surface: str, article: bool, suffixed: bool, found: dict[str, _Entry]
    ) -> None:
        for form in self._exact.get(key, ()):
            g = form.entry.group
            if g not in found and form.accepts(surface, article, suffixed):
                found[g] = form.entry

    def _lookup_wild(self, key: str, surface: str, article: bool, found: dict[str, _Entry]) -> None:
        if self._min_wild > len(key):
            return
        # A wildcard only extends the last word.
        for k in range(len(key), max(self._min_wild, key.rfind(" ") + 1) - 1, -1):
            for form in self._wild.get(key[:k], ()):
                g = form.entry.group
                if g not in found and form.accepts(surface, article, False):
                    found[g] = form.entry


_Hit = tuple[_Entry, int, int, int]  # entry, field index (0 title, 1 text), start, end (clean)
_Groups = defaultdict[str, list[_Hit]]  # bucket -> its hits, title first, then text, in order


_hit_entry = itemgetter(0)
_hit_start = itemgetter(2)
_hit_end = itemgetter(3)


def _arabic_inflections(key: str, article: bool) -> list[tuple[str, bool]]:
    """Forms of an Arabic noun phrase that agree in definiteness, and the indefinite accusative:
    اتفاقية أمنية <-> الاتفاقية الأمنية, التعاون الأمني <-> تعاون أمني, اتفاق أمني -> اتفاقا أمنيا.
    ``key`` has no leading article when ``article`` is set."""
    words = key.split(" ")
    al = _AR_ARTICLE
    rest = words[1:]
    out = []
    if article and rest and all(w.startswith(al) and len(w) > 3 for w in rest):
        indefinite = [words[0], *(w[len(al) :] for w in rest)]
        out.append((" ".join(indefinite), False))
    elif article:
        return out
    else:
        if any(w.startswith(al) for w in words):
            return out  # an idafa (مكافحة الإرهاب): no other form
        indefinite = words
        if rest:
            out.append((" ".join([words[0], *(al + w for w in rest)]), True))
    # Indefinite accusative: a written alef on words that do not end in ة or ا (أمنيا).
    accusative = [w if w.endswith((_AR_HEH, _AR_ALEF)) else w + _AR_ALEF for w in indefinite]
    if accusative != indefinite:
        out.append((" ".join(accusative), False))
    return out


def _case_rx(term: str, wildcard: bool) -> re.Pattern[str]:
    """Capitals in the term must be capitals in the text; other letters may be either:
    "IS group" matches "IS Group" and "IS GROUP" but not "is group"."""
    words = []
    for word in re.findall(r"[^\W_]+", term):
        words.append("".join(f"[{c}{c.upper()}]" if c.islower() else re.escape(c) for c in word))
    return re.compile(r"[\W_]+".join(words) + (r"\w*" if wildcard else ""))


def _arabic_phrases(trie: dict) -> list[tuple[str, bool, bool]]:
    """The phrases the Arabic expression matches (see :meth:`_Lexicon.compile`), written out for
    :class:`~marsad._match.PhraseFinder`: each key of the trie after an optional conjunction,
    bare and with the attached pronouns its flags allow; a wildcard key as a stem.

    The expression reads a leading و or ف as a conjunction first: where a phrase read that way
    ends a word before a longer phrase that starts with the letter ("و" + "زير" in "وزير
    الداخلية"), it matches the shorter one. The longer phrase is marked to be asked about."""
    out: list[tuple[str, bool, bool]] = []
    read_as_conjunction = set()  # whole phrases made of a conjunction and a key
    stack = [("", trie)]
    while stack:
        key, node = stack.pop()
        for ch, child in node.items():
            if ch is not None:
                stack.append((key + ch, child))
        flags = node.get(None, 0)
        if not flags:
            continue
        for conj in ("", *_AR_CONJUNCTIONS):
            base = conj + key
            if flags & _WILD:
                out.append((base, True, False))
                continue
            whole = []
            if flags & (_END | _SUFFIX):
                whole.append(base)
            if flags & (_SUFFIX | _SUFFIX_REQUIRED):
                whole.extend(base + suffix for suffix in _AR_SUFFIXES)
            out.extend((k, False, False) for k in whole)
            if conj:
                read_as_conjunction.update(whole)
    for i in range(len(out)):
        key, wild, _ = out[i]
        if wild or key[:1] not in _AR_CONJUNCTIONS or " " not in key:
            continue
        words = key.split(" ")
        if any(" ".join(words[:k]) in read_as_conjunction for k in range(1, len(words))):
            out[i] = (key, False, True)
    return out


def _trie_add(trie: dict, key: str, flag: int) -> None:
    node = trie
    for ch in key:
        node = node.setdefault(ch, {})
    node[None] = node.get(None, 0) | flag


_SUFFIX_RE = "(?:" + "|".join(_AR_SUFFIXES) + ")"


def _emit(node: dict, wild: str) -> str:
    """Regex for a character trie; longer continuations are tried before ending here."""
    out: list[str] = []
    _emit_into(node, wild, out)
    return "".join(out)


def _emit_into(node: dict, wild: str, out: list[str]) -> None:
    while True:
        flags = node.get(None, 0)
        if len(node) == 1 and not flags:  # one way on: no group needed
            ch = next(iter(node))
            out.append(_ESCAPED.get(ch) or _escape(ch))
            node = node[ch]
            continue
        break
    keys = sorted(k for k in node if k)
    ends = []
    if flags & _WILD:
        ends.append(wild)
    else:
        if flags & (_SUFFIX | _SUFFIX_REQUIRED):
            ends.append(_SUFFIX_RE)
        if flags & (_END | _SUFFIX):
            ends.append("")
    if not keys:
        out.append(ends[0] if len(ends) == 1 else "(?:" + "|".join(ends) + ")")
        return
    out.append("(?:")
    for i, ch in enumerate(keys):
        if i:
            out.append("|")
        out.append(_ESCAPED.get(ch) or _escape(ch))
        _emit_into(node[ch], wild, out)
    for end in ends:
        out.append("|" + end)
    out.append(")")


_ESCAPED: dict[str, str] = {" ": " +"}


def _escape(ch: str) -> str:
    _ESCAPED[ch] = re.escape(ch)
    return _ESCAPED[ch]


# --------------------------------------------------------------------------------------------
# Taxonomy loading and validation
# --------------------------------------------------------------------------------------------

_Path = tuple[str | int, ...]
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available


def _fmt_path(path: _Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Source:
    """One YAML file of the taxonomy, for reading and for error messages with line numbers."""

    def __init__(self, file: Path) -> None:
        self.file = file
        try:
            self.raw = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TaxonomyError(f"{file}: taxonomy file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TaxonomyError(f"{file}: cannot read the taxonomy file: {exc}") from None
        try:
            self.doc = yaml.load(self.raw, Loader=_YAML_LOADER)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc)
            where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise TaxonomyError(f"{file}{where}: YAML syntax error: {problem}") from None
        if self.doc is None:
            self.doc = {}
        if not isinstance(self.doc, dict):
            raise TaxonomyError(f"{file}: the top level must be a mapping of keys to values")

    def fail(self, path: _Path, message: str) -> NoReturn:
        line = self._line(path)
        at = f", line {line}" if line else ""
        raise TaxonomyError(f"{self.file}{at}: {_fmt_path(path)}: {message}")

    def _line(self, path: _Path) -> int | None:
        try:
            node = yaml.compose(self.raw, Loader=yaml.SafeLoader)
            for part in path:
                if isinstance(node, yaml.MappingNode):
                    node = next(v for k, v in node.value if k.value == part)
                elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                    node = node.value[part]
                else:
                    break
            return node.start_mark.line + 1
        except Exception:  # noqa: BLE001 - a line number is a courtesy, never an error
            return None


@dataclass(frozen=True)
class _Scoring:
    title_weight: float = 2.0
    repeat_decay: float = 0.6
    scale: float = 2.0
    reference_chars: int = 1500
    support_cap: float = 1.0
    lede_chars: int = 600
    lede_weight: float = 1.0
    inner_weight: float = 0.3
    support_window: int = 10**9
    max_evidence: int = 30
    evidence_per_term: int = 3
    background_weight: float = 0.5


@dataclass(frozen=True)
class _Context:
    """A condition near a hit: another topic's terms, enough countries, or words of its own."""

    name: str
    window: int
    topic: str | None = None
    countries: frozenset[str] = frozenset()
    min_countries: int = 1
    group: str | None = None  # words of its own: the lexicon group of its terms
    any_of: tuple[str, ...] = ()  # satisfied when one of these contexts is
    not_after: frozenset[bytes] = frozenset()  # a country right after these words is a place
    not_before: frozenset[bytes] = frozenset()  # ... or right before these (projected keys)
    sentence: bool = False  # window: sentence: the words must be in the hit's sentence
    years: tuple[int, int] | None = None  # years in this range (not dates) count as words
    months: frozenset[str] = frozenset()  # projected month names, for telling dates


@dataclass
class _Topic:
    name: str
    description: str
    threshold: float
    background: str | None = None  # a sentence context: anchors there are background mentions
    group: str = field(init=False)  # where the hits of its terms are filed
    support: str = field(init=False)  # ... and those of its support words

    def __post_init__(self) -> None:
        self.group = f"topic:{self.name}"
        self.support = _bucket(self.group, "support")


def _year_range(src: _Source, path: _Path, value: Any) -> tuple[int, int] | None:
    """A sentence context's ``years``: false (none), true (any year) or {from: Y, until: Y}."""
    if value is False:
        return None
    if value is True:
        return (1900, 2099)
    if not isinstance(value, dict) or not value or set(value) - {"from", "until"}:
        src.fail(path, "years must be true, false or a mapping with from and until (years)")
    first = value.get("from", 1900)
    last = value.get("until", 2099)
    for v in (first, last):
        if not isinstance(v, int) or isinstance(v, bool) or not 1900 <= v <= 2099:
            src.fail(path, f"years: from and until must be years from 1900 to 2099, got {v!r}")
    if first > last:
        src.fail(path, "years: from must not come after until")
    return (first, last)


def _exact_version(declared: str, fingerprint: str) -> str:
    """The declared version if ``fingerprint`` is its release's, else "<declared>+local.<fp8>"."""
    if not fingerprint or RELEASED_FINGERPRINTS.get(declared) == fingerprint:
        return declared
    return f"{declared}+local.{fingerprint[:8]}"


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _needs(
    src: _Source, path: _Path, value: Any, contexts: dict, key: str = "needs"
) -> tuple[str, ...]:
    """``needs`` (or ``unless``): a context name, a list of names, or null (none)."""
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list):
        src.fail(path, f"{key} must be a context name or a list of them, got {value!r}")
    for name in names:
        if name not in contexts:
            src.fail(path, f"{key} {name!r}, which is not defined under contexts")
    return tuple(names)


def _check_keys(src: _Source, path: _Path, mapping: dict, allowed: set[str]) -> None:
    for key in mapping:
        if key not in allowed:
            src.fail(path, f"unknown key {key!r} (expected one of: {', '.join(sorted(allowed))})")


def _number(
    src: _Source,
    path: _Path,
    mapping: dict,
    key: str,
    default: float | None,
    lo: float,
    hi: float,
    *,
    integer: bool = False,
    lo_open: bool = False,
) -> float:
    if key not in mapping:
        if default is None:
            src.fail(path, f"{key} is missing")
        return default
    v = mapping[key]
    kind = "a whole number" if integer else "a number"
    if not _is_number(v) or (integer and not isinstance(v, int)):
        src.fail(path, f"{key} must be {kind}, got {v!r}")
    if v < lo or v > hi or (lo_open and v == lo):
        low = f"greater than {lo:g}" if lo_open else f"at least {lo:g}"
        src.fail(path, f"{key} must be {low} and at most {hi:g}, got {v!r}")
    return v


class _TaxonomyBuilder:
    def __init__(self, root: Path) -> None:
        self.root = root
        if root.is_dir():
            topics_src = _Source(root / "topics.yaml")
            extra = [
                _Source(root / n) for n in ("places.yaml", "actors.yaml") if (root / n).exists()
            ]
        elif root.exists():
            topics_src, extra = _Source(root), []
        else:
            raise TaxonomyError(f"{root}: taxonomy not found (expected a folder or a YAML file)")
        self.topics_src = topics_src
        self.lexicon = _Lexicon()
        # The fingerprint is of what the files say, not how: comments and layout may change.
        digest = hashlib.sha256()
        for src in [topics_src, *extra]:
            content = json.dumps(src.doc, sort_keys=True, ensure_ascii=False, default=str)
            digest.update(src.file.name.encode() + b"\0" + content.encode() + b"\0")
        self.fingerprint = digest.hexdigest()[:12]
        _check_keys(
            topics_src,
            (),
            topics_src.doc,
            {"version", "scoring", "aliases", "contexts", "topics", "places", "actors"},
        )
        self.aliases = self._aliases()
        self.sections: dict[str, tuple[_Source, Any]] = {}
        for src in [topics_src, *extra]:
            if src is not topics_src:
                _check_keys(src, (), src.doc, {"places", "actors"})
            for section in ("places", "actors"):
                if section in src.doc:
                    if section in self.sections:
                        other = self.sections[section][0].file
                        src.fail((section,), f"{section} are already given in {other}")
                    self.sections[section] = (src, src.doc[section])

    # -- top level --------------------------------------------------------------------------

    def build(self) -> Tagger:
        src, doc = self.topics_src, self.topics_src.doc
        version = doc.get("version")
        if not isinstance(version, str) or not version.strip():
            src.fail(
                ("version",),
                'version must be a quoted, non-empty string, e.g. version: "1.1"',
            )
        if len(version.strip()) > VERSION_MAX_CHARS:
            src.fail(("version",), f"version must be at most {VERSION_MAX_CHARS} characters")
        scoring = self._scoring()
        self.lexicon.inner_weight = scoring.inner_weight
        places = self._named_entries("places", "place")
        self._named_entries("actors", "actor")
        countries = {e.country for e in places if e.country}
        contexts = self._contexts(countries)
        topics = self._topics(contexts)
        self.lexicon.compile()
        return Tagger(
            version=version.strip(),
            scoring=scoring,
            contexts=contexts,
            topics=topics,
            lexicon=self.lexicon,
            source=self.root,
            fingerprint=self.fingerprint,
        )

    def _scoring(self) -> _Scoring:
        src = self.topics_src
        raw = src.doc.get("scoring", {}) or {}
        path: _Path = ("scoring",)
        if not isinstance(raw, dict):
            src.fail(path, "scoring must be a mapping")
        d = _Scoring()
        _check_keys(src, path, raw, set(_Scoring.__dataclass_fields__))
        return _Scoring(
            title_weight=_number(src, path, raw, "title_weight", d.title_weight, 0, 100),
            repeat_decay=_number(src, path, raw, "repeat_decay", d.repeat_decay, 0, 1),
            scale=_number(src, path, raw, "scale", d.scale, 0, 1000, lo_open=True),
            reference_chars=_number(
                src, path, raw, "reference_chars", d.reference_chars, 1, 10**9, integer=True
            ),
            support_cap=_number(src, path, raw, "support_cap", d.support_cap, 0, 1000),
            lede_chars=_number(src, path, raw, "lede_chars", d.lede_chars, 0, 10**9, integer=True),
            lede_weight=_number(src, path, raw, "lede_weight", d.lede_weight, 0, 100),
            inner_weight=_number(src, path, raw, "inner_weight", d.inner_weight, 0, 1),
            support_window=_number(
                src, path, raw, "support_window", d.support_window, 0, 10**9, integer=True
            ),
            max_evidence=_number(
                src, path, raw, "max_evidence", d.max_evidence, 1, 10**6, integer=True
            ),
            evidence_per_term=_number(
                src, path, raw, "evidence_per_term", d.evidence_per_term, 1, 10**6, integer=True
            ),
            background_weight=_number(
                src, path, raw, "background_weight", d.background_weight, 0, 1
            ),
        )

    def _contexts(self, countries: set[str]) -> dict[str, _Context]:
        src = self.topics_src
        raw = src.doc.get("contexts", {}) or {}
        if not isinstance(raw, dict):
            src.fail(("contexts",), "contexts must be a mapping of names to rules")
        out = {}
        for name, spec in raw.items():
            path: _Path = ("contexts", name)
            if not isinstance(spec, dict):
                src.fail(path, "a context must be a mapping (topic_terms or countries, window)")
            _check_keys(
                src,
                path,
                spec,
                {
                    "description", "topic_terms", "countries", "min_countries", "terms", "window",
                    "any_of", "not_after", "not_before", "years", "months",
                },
            )  # fmt: skip
            kinds = ("topic_terms", "countries", "terms", "any_of")
            if sum(k in spec for k in kinds) != 1:
                src.fail(path, "give exactly one of topic_terms, countries, terms or any_of")
            if "any_of" in spec:
                names = spec["any_of"]
                if not isinstance(names, list) or not names:
                    src.fail(path, "any_of must be a non-empty list of context names")
                for i, other in enumerate(names):
                    if other not in raw or other == name:
                        src.fail((*path, "any_of", i), f"{other!r} is not another context")
                    if "any_of" in (raw[other] or {}):
                        src.fail((*path, "any_of", i), f"{other!r} is itself an any_of context")
                out[name] = _Context(name, 0, any_of=tuple(names))
                continue
            sentence = spec.get("window") == "sentence"
            if sentence and "terms" not in spec:
                src.fail((*path, "window"), "window: sentence is only for contexts with terms")
            if ("years" in spec or "months" in spec) and not sentence:
                src.fail(path, "years and months are only for contexts with window: sentence")
            window = 0
            if not sentence:
                window = int(_number(src, path, spec, "window", None, 0, 10**9, integer=True))
            if "terms" in spec:
                items = spec["terms"]
                if not isinstance(items, list) or not items:
                    src.fail(path, "terms must be a non-empty list")
                group = f"context:{name}"
                for i, item in enumerate(items):
                    ipath = (*path, "terms", i)
                    if isinstance(item, str):
                        item = {"term": item}
                    if not isinstance(item, dict) or not isinstance(item.get("term"), str):
                        src.fail(ipath, "a term must be text or a mapping with term:")
                    _check_keys(src, ipath, item, {"term", "variants", "pattern", "case"})
                    entry = _Entry(item["term"].strip(), "context", _fmt_path(ipath), group)
                    self._add_forms(src, ipath, item, entry, suffixes=True)
                years = _year_range(src, (*path, "years"), spec.get("years", False))
                months = spec.get("months") or []
                if not isinstance(months, list) or not all(isinstance(m, str) for m in months):
                    src.fail((*path, "months"), "months must be a list of month names")
                out[name] = _Context(
                    name,
                    window,
                    group=group,
                    sentence=sentence,
                    years=years,
                    months=frozenset(_key(m) for m in months if _key(m)),
                )
                continue
            if "topic_terms" in spec:
                topic = spec["topic_terms"]
                if topic not in TOPICS:
                    src.fail(path, f"topic_terms must be one of {', '.join(TOPICS)}, got {topic!r}")
                out[name] = _Context(name, window, topic=topic)
                continue
            names = spec["countries"]
            if not isinstance(names, list) or not names:
                src.fail(path, "countries must be a non-empty list of country names")
            for i, c in enumerate(names):
                if c not in countries:
                    src.fail((*path, "countries", i), f"{c!r} is not a country in the places list")
            minimum = int(_number(src, path, spec, "min_countries", 1, 1, len(names), integer=True))
            words = {}
            for key in ("not_after", "not_before"):
                items = spec.get(key) or []
                if not isinstance(items, list) or not all(isinstance(w, str) for w in items):
                    src.fail((*path, key), f"{key} must be a list of words")
                words[key] = frozenset(_key(w).encode("latin-1") for w in items if _key(w))
            out[name] = _Context(
                name,
                window,
                countries=frozenset(names),
                min_countries=minimum,
                not_after=words["not_after"],
                not_before=words["not_before"],
            )
        return out

    # -- topics -----------------------------------------------------------------------------

    def _topics(self, contexts: dict[str, _Context]) -> dict[str, _Topic]:
        src = self.topics_src
        raw = src.doc.get("topics")
        if not isinstance(raw, dict):
            src.fail(("topics",), f"topics must be a mapping with {', '.join(TOPICS)}")
        for name in raw:
            if name not in TOPICS:
                src.fail(("topics", name), f"unknown topic (the topics are {', '.join(TOPICS)})")
        out = {}
        for name in TOPICS:
            path: _Path = ("topics", name)
            if name not in raw:
                src.fail(("topics",), f"topic {name!r} is missing")
            spec = raw[name]
            if not isinstance(spec, dict):
                src.fail(path, "a topic must be a mapping (threshold, terms, ...)")
            _check_keys(
                src,
                path,
                spec,
                {"description", "threshold", "needs", "terms", "support", "exclude", "background"},
            )
            threshold = _number(src, path, spec, "threshold", None, 0, 1)
            needs = _needs(src, path, spec.get("needs"), contexts)
            description = spec.get("description") or ""
            if not isinstance(description, str):
                src.fail(path, "description must be text")
            background = spec.get("background")
            if background is not None:
                ctx = contexts.get(background) if isinstance(background, str) else None
                if ctx is None or not ctx.sentence:
                    src.fail(
                        (*path, "background"),
                        f"background must name a context with window: sentence, got {background!r}",
                    )
            topic = _Topic(name, description.strip(), threshold, background)
            if not spec.get("terms"):
                src.fail(path, "terms is missing or empty: a topic needs at least one term")
            for role, key in (("term", "terms"), ("support", "support"), ("exclude", "exclude")):
                items = spec.get(key) or []
                if not isinstance(items, list):
                    src.fail((*path, key), f"{key} must be a list")
                for i, item in enumerate(items):
                    self._topic_entry(name, (*path, key, i), item, role, needs, contexts)
            out[name] = topic
        return out

    def _topic_entry(
        self,
        topic: str,
        path: _Path,
        item: Any,
        role: str,
        topic_needs: tuple[str, ...],
        contexts: dict[str, _Context],
    ) -> None:
        src = self.topics_src
        if isinstance(item, str):
            item = {"term": item}
        if not isinstance(item, dict):
            src.fail(path, f"an entry must be a term (text) or a mapping with term:, got {item!r}")
        allowed = {"term", "variants", "pattern", "case"}
        if role != "exclude":
            allowed |= {"weight", "needs", "unless"}
        _check_keys(src, path, item, allowed)
        label = item.get("term")
        if not isinstance(label, str) or not label.strip():
            src.fail(path, "term must be non-empty text")
        weight = 1.0
        if "weight" in item:
            w = item["weight"]
            if not _is_number(w):
                src.fail(path, f"weight must be a number, got {w!r}")
            if not 0 < w <= 10:
                src.fail(path, f"weight must be greater than 0 and at most 10, got {w!r}")
            weight = float(w)
        if "needs" in item:
            needs = _needs(src, path, item["needs"], contexts)
        else:
            needs = topic_needs if role == "term" else ()
        unless = _needs(src, path, item.get("unless"), contexts, "unless")
        entry = _Entry(
            label.strip(), role, _fmt_path(path), f"topic:{topic}", weight, needs, unless=unless
        )
        self._add_forms(src, path, item, entry, suffixes=True)

    def _add_forms(
        self, src: _Source, path: _Path, item: dict, entry: _Entry, *, suffixes: bool
    ) -> None:
        case = item.get("case", "insensitive")
        if case not in ("sensitive", "insensitive"):
            src.fail(path, f"case must be 'sensitive' or 'insensitive', got {case!r}")
        sensitive = case == "sensitive"
        if "pattern" in item:
            pattern = item["pattern"]
            if not isinstance(pattern, str) or not pattern:
                src.fail(path, "pattern must be non-empty text")
            if "variants" in item:
                src.fail(path, "give either pattern or variants, not both")
            problem = self.lexicon.add_pattern(pattern, entry, sensitive)
            if problem:
                src.fail(path, problem)
            return
        variants = item.get("variants", [])
        if not isinstance(variants, list):
            src.fail(path, "variants must be a list of spellings")
        for i, spelling in enumerate([item["term"], *variants]):
            at = path if i == 0 else (*path, "variants", i - 1)
            if not isinstance(spelling, str):
                src.fail(at, f"a spelling must be text, got {spelling!r}")
            for expanded in self._expand(src, at, spelling):
                problem = self.lexicon.add_literal(expanded, entry, sensitive, suffixes)
                if problem:
                    src.fail(at, problem)

    def _aliases(self) -> dict[str, list[str]]:
        """``aliases``: named lists of spellings that terms use as ``{name}``."""
        src = self.topics_src
        raw = src.doc.get("aliases") or {}
        if not isinstance(raw, dict):
            src.fail(("aliases",), "aliases must be a mapping of names to lists of spellings")
        for name, items in raw.items():
            if not isinstance(name, str) or not re.fullmatch(r"\w+", name):
                src.fail(("aliases",), f"alias names are single words, got {name!r}")
            if not isinstance(items, list) or not items:
                src.fail(("aliases", name), "an alias must be a non-empty list of spellings")
            for i, item in enumerate(items):
                if not isinstance(item, str) or not item.strip() or "{" in item:
                    src.fail(("aliases", name, i), "a spelling must be text without {...}")
        return raw

    def _expand(self, src: _Source, path: _Path, spelling: str) -> list[str]:
        """Spell out aliases: "once held by {isis}" gives one spelling per alias of isis."""
        out = [spelling]
        while "{" in out[0]:
            m = re.search(r"\{(\w*)\}", out[0])
            if m is None:
                src.fail(path, "braces are only used around an alias name, as in {isis}")
            name = m.group(1)
            if name not in self.aliases:
                src.fail(path, f"{{{name}}} is not an alias (aliases: {', '.join(self.aliases)})")
            out = [s.replace(m.group(), alias, 1) for s in out for alias in self.aliases[name]]
        return out

    # -- places and actors ------------------------------------------------------------------

    def _named_entries(self, section: str, role: str) -> list[_Entry]:
        entries: list[_Entry] = []
        blocs: list[tuple[_Path, str]] = []
        if section not in self.sections:
            return entries
        src, raw = self.sections[section]
        if not isinstance(raw, list):
            src.fail((section,), f"{section} must be a list of {{name, terms}} entries")
        names: set[str] = set()
        for i, item in enumerate(raw):
            path: _Path = (section, i)
            if not isinstance(item, dict):
                src.fail(path, f"each {role} must be a mapping with name and terms")
            _check_keys(
                src,
                path,
                item,
                {"name", "terms"} | ({"country", "members"} if role == "place" else set()),
            )
            name = item.get("name")
            if not isinstance(name, str) or not name.strip():
                src.fail(path, "name must be non-empty text")
            name = name.strip()
            if name in names:
                src.fail(path, f"{name!r} is listed twice")
            names.add(name)
            members = item.get("members") or []
            if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
                src.fail(path, "members must be a list of country names")
            if members and "country" in item:
                src.fail(path, "a bloc has members, not a country")
            default = name if role == "place" and not members else None
            country = item.get("country", default)
            if default and (not isinstance(country, str) or not country.strip()):
                src.fail(path, "country must be non-empty text")
            terms = item.get("terms")
            if not isinstance(terms, list) or not terms:
                src.fail(path, "terms must be a non-empty list")
            entry = _Entry(
                name, role, _fmt_path(path), section, country=country, members=frozenset(members)
            )
            entries.append(entry)
            for m in members:
                blocs.append((path, m))
            for j, term in enumerate(terms):
                tpath = (*path, "terms", j)
                if isinstance(term, str):
                    term = {"term": term}
                if not isinstance(term, dict):
                    src.fail(tpath, f"a term must be text or a mapping with term:, got {term!r}")
                _check_keys(src, tpath, term, {"term", "variants", "pattern", "case"})
                if not isinstance(term.get("term"), str) or not term["term"].strip():
                    src.fail(tpath, "term must be non-empty text")
                # Names take no attached pronouns: قطرها is "its diameter", not Qatar.
                self._add_forms(src, tpath, term, entry, suffixes=False)
        countries = {e.label for e in entries if e.country == e.label}
        for path, member in blocs:
            if member not in countries:
                src.fail(path, f"member {member!r} is not a country in the places list")
        return entries


# --------------------------------------------------------------------------------------------
# The tagger
# --------------------------------------------------------------------------------------------


class Tagger:
    """Tags articles with topics, places and actors according to one taxonomy.

    Build it with :meth:`from_path` (or :func:`get_tagger` for the bundled taxonomy); it holds
    only compiled expressions and does no I/O when tagging, so one instance can serve a whole run.
    """

    def __init__(
        self,
        *,
        version: str,
        scoring: _Scoring,
        contexts: dict[str, _Context],
        topics: dict[str, _Topic],
        lexicon: _Lexicon,
        source: Path | None = None,
        fingerprint: str = "",
    ) -> None:
        # A hash of the taxonomy files: tells an edited taxonomy whose version was not bumped.
        self.fingerprint = fingerprint
        self.declared_version = version  # as the taxonomy says
        # The version recorded with every tag: the declared one when the files are its release.
        self.version = _exact_version(version, fingerprint)
        self.source = source
        self._scoring = scoring
        self._contexts = contexts
        self._topics = topics
        self._lexicon = lexicon
        self._decay = [scoring.repeat_decay**n for n in range(64)]  # a term's n-th repeat
        self._discounted: dict[tuple[_Entry, bool], _Entry] = {}  # (anchor, in title) -> weaker

    @classmethod
    def from_path(cls, path: Path | str | None = None) -> Tagger:
        """Load a taxonomy: a folder with topics.yaml (places.yaml, actors.yaml optional), or one
        YAML file holding everything. ``None`` loads the taxonomy bundled with Marsad."""
        root = BUNDLED_TAXONOMY if path is None else Path(path)
        return _TaxonomyBuilder(root).build()

    @property
    def thresholds(self) -> dict[str, float]:
        return {name: t.threshold for name, t in self._topics.items()}

    @property
    def descriptions(self) -> dict[str, str]:
        return {name: t.description for name, t in self._topics.items()}

    def tag(self, title: str | None, text: str | None, language: str | None = None) -> TagResult:
        """Topics (score >= threshold, context rules passed), places and actors of an article.

        Every term is tried whatever the language, because Arabic articles quote English names
        and English ones transliterate Arabic. ``language`` is accepted for the callers' sake but
        not needed: which scripts a text contains, and which dominates, is read from the text
        itself (cheaper than trusting a detector that can be wrong on short or mixed texts).
        """
        topics, places, actors = self._analyse(title, text, explain=False)
        return _frozen(
            TagResult, topics=tuple(tag for tag, _ in topics), places=places, actors=actors
        )

    def explain(
        self, title: str | None, text: str | None, language: str | None = None
    ) -> dict[str, Any]:
        """Every topic's score and evidence, also below the threshold: for tuning the taxonomy."""
        topics, places, actors = self._analyse(title, text, explain=True)
        return {
            "version": self.version,
            "topics": [
                {
                    **tag.to_dict(),
                    "evidence": [{**e.to_dict(), "rule": e.rule} for e in tag.evidence],
                    "threshold": self._topics[tag.topic].threshold,
                    "given": passed,
                }
                for tag, passed in topics
            ],
            "places": list(places),
            "actors": list(actors),
        }

    # -- internals --------------------------------------------------------------------------

    def _analyse(
        self, title: str | None, text: str | None, *, explain: bool
    ) -> tuple[list[tuple[TopicTag, bool]], tuple[str, ...], tuple[str, ...]]:
        """Topics with whether each is given (all topics when ``explain``, else the given ones),
        places and actors."""
        fields = (_Field("title", 0, title or ""), _Field("text", 1, text or ""))
        groups: _Groups = defaultdict(list)
        self._lexicon.scan_article(*fields, groups)

        sc = self._scoring
        conditions = _Conditions(self._contexts, fields, groups, sc.lede_chars)
        ok = conditions.ok
        density = max(1.0, math.sqrt((len(fields[1].projection) - 1) / sc.reference_chars))
        results = []
        for name, topic in self._topics.items():
            found = groups.get(topic.group, ())
            if found and not explain and self._reach(found, density) < topic.threshold - 0.001:
                continue  # out of reach: dropped before its anchors' contexts are asked
            anchors = [h for h in found if not h[0].conditional or ok(h)]
            if not anchors:
                if explain:
                    results.append((_frozen(TopicTag, topic=name, score=0.0, evidence=()), False))
                continue
            past: list[tuple[int, int, int]] = []
            if topic.background is not None:
                # Background mentions matter unless the title names the topic (other than with a
                # word of retrospect: "Ten years after ISIS seized Palmyra, a festival returns";
                # a year alone dates the facts of a current story: "sentenced over 2015
                # executions"), or speaks of it while the text names it in its lede: the article
                # is then about it (hits are in reading order: title hits come first).
                if anchors[0][1] == 0:
                    looks_back = groups.get(self._contexts[topic.background].group or "")
                    background = bool(looks_back and looks_back[0][1] == 0)
                else:
                    said = groups.get(topic.support)
                    background = not (said and said[0][1] == 0 and anchors[0][2] < sc.lede_chars)
                if background:
                    anchors, past = self._background(anchors, conditions, topic.background)
            anchor_total = self._total(anchors, density)
            # Support adds at most min(support_cap, anchor_total): when even that leaves the
            # score clearly below the threshold, the topic is not given, whatever the support.
            best = anchor_total + min(sc.support_cap, anchor_total)
            if not explain and 1.0 - math.exp(-best / sc.scale) < topic.threshold - 0.001:
                continue
            support = groups.get(topic.support, [])
            if support:
                # Support words count near a counted anchor: in the text within support_window
                # of one, or anywhere when one is in the title; in the title beside one.
                in_title = anchors[0][1] == 0
                near = _near(anchors, sc.support_window, sc.lede_chars)
                support = [
                    h
                    for h in support
                    if (in_title if h[1] == 0 else near is True or near(h[1], h[2], h[3]))
                    and (not h[0].conditional or ok(h))
                ]
                if past:  # support words in a background sentence tell of the past, not now
                    support = [h for h in support if not _inside(past, h)]
            support_total = self._total(support, density) if support else 0.0
            raw = anchor_total + min(sc.support_cap, anchor_total, support_total)
            score = round(1.0 - math.exp(-raw / sc.scale), 3)
            passed = score >= topic.threshold
            if not (passed or explain):
                continue
            evidence = []
            for entry, fi, start, end in self._evidence(anchors, support):
                fld = fields[fi]
                if fld._shift is not None:
                    start, end = fld.orig(start), fld.orig(end)
                ev = _new(Evidence)  # as _frozen does, inlined: an article has many
                ev.__dict__.update(
                    {
                        "term": fld.text[start:end],
                        "field": fld.name,
                        "start": start,
                        "end": end,
                        "rule": entry.label,
                    }
                )
                evidence.append(ev)
            tag = _frozen(TopicTag, topic=name, score=score, evidence=tuple(evidence))
            results.append((tag, passed))
        return results, _places(groups.get("places", ())), _names(groups.get("actors", ()))

    def _reach(self, found: list[_Hit], density: float) -> float:
        """The highest score a topic could get from the anchors found: each counted in full (no
        repeat decay, no context failing, no background discount: each weighs at most 1), and
        support at its most. Cheaper than the exact score, which asks contexts."""
        sc = self._scoring
        lede, lede_weight = sc.lede_chars, sc.lede_weight
        title_sum = text_sum = 0.0
        for entry, fi, start, _ in found:
            if fi == 0:
                title_sum += entry.weight
            elif start < lede:
                text_sum += entry.weight * lede_weight
            else:
                text_sum += entry.weight
        bound = title_sum * sc.title_weight + text_sum / density
        best = bound + min(sc.support_cap, bound)
        return 1.0 - math.exp(-best / sc.scale)

    def _background(
        self, anchors: list[_Hit], conditions: _Conditions, context: str
    ) -> tuple[list[_Hit], list[tuple[int, int, int]]]:
        """A topic's ``background``: an anchor in a sentence where that context holds (dated in
        the past: "in Sinjar, where ISIS killed thousands in 2014") weighs background_weight
        times its weight; in the title, that is all it weighs (no title_weight above 1: a title
        that names the topic in retrospect is one background mention, not the article's
        subject). Returns the anchors and those sentences (field index, start, end)."""
        past = []
        out = anchors
        sc = self._scoring
        for k, hit in enumerate(anchors):
            sentence = conditions.sentence(context, hit)
            if sentence is not None:
                if out is anchors:
                    out = list(anchors)
                entry = hit[0]
                in_title = hit[1] == 0
                weak = self._discounted.get((entry, in_title))
                if weak is None:
                    weight = entry.weight * sc.background_weight
                    if in_title and sc.title_weight > 1:
                        weight /= sc.title_weight
                    weak = self._discounted[(entry, in_title)] = replace(entry, weight=weight)
                out[k] = (weak, hit[1], hit[2], hit[3])
                past.append(sentence)
        return out, past

    def _evidence(self, anchors: list[_Hit], support: list[_Hit]) -> list[_Hit]:
        """Anchors first when the evidence must be cut, at most ``evidence_per_term``
        occurrences of one term per field; then in reading order (title first)."""
        per_term, most = self._scoring.evidence_per_term, self._scoring.max_evidence
        out: list[_Hit] = []
        seen: tuple[dict[str, int], dict[str, int]] = ({}, {})  # per field: term -> count
        for hit in anchors + support:
            counts = seen[hit[1]]
            key = hit[0].where  # an entry and its weighted copies are one term
            n = counts.get(key, 0)
            if n < per_term:
                counts[key] = n + 1
                out.append(hit)
                if len(out) >= most:
                    break
        out.sort(key=_reading_order)  # title first, then by start
        return out

    def _total(self, hits: list[_Hit], density: float) -> float:
        """The weight of hits (in reading order): each repeat of a term in a field weighs
        repeat_decay times the one before; title and lede hits weigh more."""
        sc = self._scoring
        decay = self._decay
        if len(decay) < len(hits):  # a term's n-th repeat has n hits before it
            # A new list, never one that grows: a tagger may serve several threads.
            decay = self._decay = [sc.repeat_decay**n for n in range(2 * len(hits))]
        lede, lede_weight, title_weight = sc.lede_chars, sc.lede_weight, sc.title_weight
        in_title: dict[_Entry, int] = {}
        in_text: dict[_Entry, int] = {}
        title_sum = text_sum = 0.0
        for entry, fi, start, _ in hits:
            if fi:
                n = in_text.get(entry, 0)
                in_text[entry] = n + 1
                weight = entry.weight * decay[n]
                if start < lede:
                    text_sum += weight * lede_weight
                else:
                    text_sum += weight
            else:
                n = in_title.get(entry, 0)
                in_title[entry] = n + 1
                title_sum += entry.weight * decay[n] * title_weight
        return title_sum + text_sum / density


def _near(spots: list[_Hit] | tuple, window: int, lede: int) -> _Check:
    """Whether a hit is near one of ``spots`` (hits in reading order): True or False when that
    does not depend on the hit, else a function of the hit's field index, start and end.

    Near means: anywhere in the title; for a hit in the title, also the first ``lede`` characters
    of the text; for a hit in the text, within ``window`` characters of it.
    """
    if not spots:
        return False
    if spots[0][1] == 0:
        return True
    # A hit is near when, among the spots that start before its end + window, the farthest
    # reaching ends after its start - window. Indexed with builtins: a loop over the spots in
    # Python would cost more than all the questions asked.
    starts = list(map(_hit_start, spots))
    farthest = list(accumulate(map(_hit_end, spots), max))  # of the spots up to each one
    in_lede = starts[0] < lede

    def near(fi: int, start: int, end: int) -> bool:
        if fi == 0:
            return in_lede
        i = bisect_right(starts, end + window)
        return i > 0 and farthest[i - 1] >= start - window

    return near


def _countries_near(
    spots: list[_Hit], ctx: _Context, lede: int, skip: Callable[[_Hit], bool] | None
) -> _Check:
    """Whether at least ``ctx.min_countries`` distinct countries of ``ctx`` are near a hit (as
    :func:`_near` has it), not counting the spots that ``skip`` (named as a place, not a
    party); ``spots`` are the place hits that count as one of those countries."""
    if ctx.min_countries == 1:
        return _near([h for h in spots if not skip(h)] if skip else spots, ctx.window, lede)
    wanted, minimum, window = ctx.countries, ctx.min_countries, ctx.window
    in_title: set[str] = set()
    for h in spots:
        if h[1] == 0 and not (skip and skip(h)):
            in_title.update(h[0].countries & wanted)
    if len(in_title) >= minimum:
        return True
    text = [h for h in spots if h[1] == 1]
    if not text:
        return False
    starts = list(map(_hit_start, text))
    longest = max(map(sub, map(_hit_end, text), starts))
    in_lede = bisect_left(starts, lede)
    counted: dict[int, frozenset[str]] = {}  # spot index -> its countries, none if skipped

    def near(fi: int, start: int, end: int) -> bool:
        seen = set(in_title)
        if fi == 0:
            lo, hi = 0, in_lede
        else:
            lo = bisect_left(starts, start - window - longest)
            hi = bisect_right(starts, end + window)
        for i in range(lo, hi):
            h = text[i]
            if fi == 0 or h[3] >= start - window:
                countries = counted.get(i)
                if countries is None:
                    skipped = skip is not None and skip(h)
                    countries = counted[i] = frozenset() if skipped else h[0].countries & wanted
                if countries:
                    seen.update(countries)
                    if len(seen) >= minimum:
                        return True
        return False

    return near


_Check = bool | Callable[[int, int, int], bool]


class _Conditions:
    """The context rules for one article. A context is indexed the first time a hit asks for it
    (most articles never ask for most contexts) and then answers every hit of the article."""

    __slots__ = (
        "_checks", "_clean", "_contexts", "_fields", "_groups", "_lede", "_marks", "_sentences",
        "_years",
    )  # fmt: skip

    def __init__(
        self,
        contexts: dict[str, _Context],
        fields: tuple[_Field, _Field],
        groups: _Groups,
        lede: int,
    ) -> None:
        self._contexts = contexts
        self._fields = fields
        self._groups = groups
        self._lede = lede
        self._checks: dict[str, _Check] = {}
        self._clean: list[str | None] = [None, None]  # the fields without their marks
        self._sentences: list[tuple[int, int, int]] = []  # found so far: field index, start, end
        self._marks: dict[tuple[str, int], list[int]] = {}  # sentence context, field -> starts
        self._years: dict[tuple, bool] = {}  # field, start of 19xx/20xx, range -> a year

    def ok(self, hit: _Hit) -> bool:
        """Whether all of the hit's ``needs`` and none of its ``unless`` are satisfied."""
        entry, fi, start, end = hit
        checks = self._checks
        for name in entry.needs:
            check = checks.get(name)
            if check is None:
                check = self._check(name)
            if check is False or (check is not True and not check(fi, start, end)):
                return False
        for name in entry.unless:
            check = checks.get(name)
            if check is None:
                check = self._check(name)
            if check is True or (check is not False and check(fi, start, end)):
                return False
        return True

    def _check(self, name: str) -> _Check:
        check = self._checks.get(name)
        if check is None:
            check = self._checks[name] = self._build(self._contexts[name])
        return check

    def _build(self, ctx: _Context) -> _Check:
        if ctx.any_of:
            parts = [self._check(other) for other in ctx.any_of]
            if True in parts:
                return True
            calls = [p for p in parts if p is not False]
            if len(calls) <= 1:
                return calls[0] if calls else False
            return lambda fi, start, end: any(c(fi, start, end) for c in calls)
        if ctx.topic is not None:
            # The topic's unconditional anchors: a conditional one cannot vouch for another (or
            # for itself).
            topic_hits = self._groups.get(f"topic:{ctx.topic}", ())
            return _near([h for h in topic_hits if h[0].vouches], ctx.window, self._lede)
        if ctx.sentence:
            name = ctx.name
            return lambda fi, start, end: self.sentence(name, (None, fi, start, end)) is not None
        if ctx.group is not None:
            return _near(self._groups.get(ctx.group, ()), ctx.window, self._lede)
        places = self._groups.get("places", ())
        spots = [h for h in places if not h[0].countries.isdisjoint(ctx.countries)]
        skip = None
        if ctx.not_after or ctx.not_before:
            fields = self._fields
            skip = lambda h: _location(fields, h, ctx)
        return _countries_near(spots, ctx, self._lede, skip)


    def sentence(self, name: str, hit: _Hit | tuple) -> tuple[int, int, int] | None:
        """The sentence of a hit (field index, start, end) when context ``name`` (window:
        sentence) holds in it: one of its words, or with ``years`` a year that is not part of a
        date, is in that sentence. None when it does not hold.

        Cheap when it does not: the words and years within _SENTENCE_REACH characters are looked
        up first (years with bytes.find in the projection), and only the stretch between the hit
        and each of them is searched for the end of a sentence."""
        _, fi, start, end = hit
        ctx = self._contexts[name]
        words = self._marks.get((name, fi))
        if words is None:
            group = self._groups.get(ctx.group or "", ())
            words = self._marks[(name, fi)] = [h[2] for h in group if h[1] == fi]
        fld = self._fields[fi]
        text = self._clean[fi]
        if text is None:
            text = self._clean[fi] = fld.clean
        lo, hi = max(0, start - _SENTENCE_REACH), min(len(text), end + _SENTENCE_REACH)
        marks = words[bisect_left(words, lo) : bisect_left(words, hi)]
        if ctx.years:
            marks += _years(fld, text, lo, hi, ctx.years, ctx.months, self._years)
        for m in marks:
            if not (_ends_between(text, m, start) if m < start else _ends_between(text, end, m)):
                break  # in the hit's sentence
        else:
            return None
        for known in self._sentences:
            if known[0] == fi and known[1] <= start < known[2]:
                return known
        sentence = (fi, *_sentence(text, start, end, lo, hi))
        self._sentences.append(sentence)
        return sentence


# Sentences: a hit's sentence runs from the end of the previous one to the end of its own, at
# most _SENTENCE_REACH characters either side of the hit. A sentence ends at . ! ? ؟ ; ؛ or …
# followed by a space, a closing quote or bracket or the end of the text ("U.S." and "3.5" go
# on), or at a line break.
_SENTENCE_REACH = 400
_SENTENCE_MARKS = (".", "\n", "!", "?", "\u061f", ";", "\u061b", "\u2026")
_AFTER_SENTENCE = frozenset(" \t\r\n\u00a0\"')]\u201d\u2019\u00bb")
# A year: 19xx or 20xx (Arabic-Indic digits too), not inside a number, time or ISO date
# ("2024-01-05").
_ARABIC_YEAR_HEADS = ("\u0661\u0669", "\u0662\u0660", "\u06f1\u06f9", "\u06f2\u06f0")
_ARABIC_YEAR_PREFIXES = "\u0648\u0628\u0644\u0641"  # و ب ل ف
_YEAR_AFTER = re.compile(r"\w|[/:]|[-.]\d\d?(?!\d)")
_WORD = re.compile(r"\w+")


def _sentence(text: str, start: int, end: int, lo: int, hi: int) -> tuple[int, int]:
    """The sentence around text[start:end], within text[lo:hi]."""
    s, e = lo, hi
    for mark in _SENTENCE_MARKS:
        i = text.rfind(mark, s, start)
        while i >= 0 and not _ends(text, i):
            i = text.rfind(mark, s, i)
        if i >= s:
            s = i + 1
        j = text.find(mark, end, e)
        while j >= 0 and not _ends(text, j):
            j = text.find(mark, j + 1, e)
        if j >= 0:
            e = j
    return s, e


def _ends(text: str, i: int) -> bool:
    """Whether the mark at text[i] ends a sentence."""
    return i + 1 >= len(text) or text[i + 1] in _AFTER_SENTENCE


def _ends_between(text: str, a: int, b: int) -> bool:
    """Whether a sentence ends in text[a:b]."""
    for mark in _SENTENCE_MARKS:
        i = text.find(mark, a, b)
        while i >= 0:
            if _ends(text, i):
                return True
            i = text.find(mark, i + 1, b)
    return False


def _years(
    fld: _Field,
    text: str,
    start: int,
    end: int,
    years: tuple[int, int],
    months: frozenset[str],
    known: dict[tuple, bool],
) -> list[int]:
    """Where the clean ``text`` of a field names, in text[start:end], a year of the range
    ``years`` that is not part of a full date: "in 2014", "عام 2014", "in June 2014", but not
    "March 3, 2025" or "3 آذار 2025" (a day before the year, perhaps with a month between: a
    dated report, today's news).
    Candidates are found with bytes.find in the projection (which keeps Western digits), cheaper
    than an expression; Arabic-Indic digits are looked up in Arabic texts. ``known`` remembers
    the candidates already told apart (field index, start -> whether a year)."""
    projection = fld.projection  # projection[i + 1] is text[i]
    starts = []
    for head in (b"19", b"20"):
        i = projection.find(head, start + 1, end + 1)
        while i >= 0:
            starts.append(i - 1)
            i = projection.find(head, i + 1, end + 1)
    if fld.arabic:
        for head in _ARABIC_YEAR_HEADS:
            i = text.find(head, start, end)
            while i >= 0:
                starts.append(i)
                i = text.find(head, i + 1, end)
    fi = fld.index
    out = []
    for i in starts:
        year = known.get((fi, i, years))
        if year is None:
            year = known[(fi, i, years)] = _is_year(text, i, years, months)
        if year:
            out.append(i)
    return out


def _is_year(text: str, i: int, years: tuple[int, int], months: frozenset[str]) -> bool:
    """Whether the 19.. or 20.. at text[i] is a year of the range ``years`` that is not part of a
    full date."""
    j = i + 4
    if j > len(text) or not text[i + 2 : j].isdecimal() or _YEAR_AFTER.match(text, j):
        return False
    if not years[0] <= int(text[i:j]) <= years[1]:
        return False
    c = text[i - 1] if i else " "
    # و ب ل ف may be attached to a year (و2017, ب2014); other letters and digits not.
    if (c.isalnum() or c in "/:_") and c not in _ARABIC_YEAR_PREFIXES:
        return False
    before = _WORD.findall(text, max(0, i - 25), i)
    if before and _word_key(before[-1]) in months:
        before.pop()
    return not (before and before[-1].isdecimal() and len(before[-1]) <= 2)


@lru_cache(maxsize=4096)
def _word_key(word: str) -> str:
    return _key(word)


def _inside(sentences: list[tuple[int, int, int]], hit: _Hit) -> bool:
    """Whether a hit lies in one of these sentences (field index, start, end)."""
    _, fi, start, _ = hit
    return any(f == fi and s <= start < e for f, s, e in sentences)


def _location(fields: tuple[_Field, _Field], hit: _Hit, ctx: _Context) -> bool:
    """Whether a country is named as a place ("on the border with Syria") rather than as a
    party: right after one of the context's ``not_after`` words or before a ``not_before`` one."""
    _, fi, start, end = hit
    projection = fields[fi].projection  # projection[i + 1] is clean[i]
    if ctx.not_after:
        before = projection[start - 40 if start > 40 else 0 : start + 1].split()
        if before and (before[-1] in ctx.not_after or b" ".join(before[-2:]) in ctx.not_after):
            return True
    if ctx.not_before:
        after = projection[end + 1 : end + 40].split(None, 2)
        if after and after[0] == b"s":  # Syria's border
            del after[0]
        if after and after[0] in ctx.not_before:
            return True
    return False


def _names(hits: list[_Hit] | tuple) -> tuple[str, ...]:
    """Canonical names in order of first mention (title first), without repeats."""
    return tuple(dict.fromkeys(entry.label for entry in dict.fromkeys(map(_hit_entry, hits))))


_reading_order = itemgetter(1, 2)  # of a hit: field index, start


def _places(hits: list[_Hit]) -> tuple[str, ...]:
    """Places in order of first mention; a place inside a country brings the country right after
    it (Damascus -> Damascus, Syria), so a search for a country finds its cities' articles."""
    out: dict[str, None] = {}
    for entry in dict.fromkeys(map(_hit_entry, hits)):
        if entry.label not in out:
            out[entry.label] = None
            if entry.country:
                out.setdefault(entry.country)
    return tuple(out)


@lru_cache(maxsize=1)
def get_tagger() -> Tagger:
    """The tagger for the bundled taxonomy, built once per process."""
    return Tagger.from_path(None)
