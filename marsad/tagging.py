"""Topic tagging: which of the analysts' topics an article is about, and why.

The rules live in YAML files that analysts read and edit (``marsad/taxonomy/``: ``topics.yaml``,
``places.yaml``, ``actors.yaml``; the format is described at the top of ``topics.yaml``). Loading
them builds a :class:`Tagger`; malformed files raise :class:`~marsad.errors.TaxonomyError` naming
the file, the line and the place (``topics.coalition.terms[3]: weight must be a number``).

Tagging is explainable: every topic carries the matched terms with character offsets into the
*original* title or text (``text[start:end]`` is the surface form, Arabic prefixes and diacritics
included), and the taxonomy ``version`` that produced it.

How a text is matched
  1. Normalise almost without moving positions: Arabic letter variants (أ إ آ ٱ -> ا, ة -> ه,
     ى -> ي, ...), quotes and dashes are folded one character for one; diacritics, tatweel and
     invisible marks are deleted, and a sorted list of the deletions maps positions back.
  2. One precompiled regular expression per topic (and one for places, one for actors) finds all
     phrases in one pass. Terms are compiled into a character trie, so the alternation stays fast
     with hundreds of terms; Arabic stems enter the trie once per clitic prefix (و ف ب ل ال).
  3. The matched surface is looked up in a dictionary to find which taxonomy entry it is (with the
     Arabic article and case-sensitivity checks), so the big regex needs no capture groups.
  4. Context rules, exclusions and weights turn the hits into a score per topic.
"""

from __future__ import annotations

import hashlib
import math
import re
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn

import yaml

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

# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """One matched term: ``field`` is "title" or "text"; offsets index the original string."""

    term: str
    field: str
    start: int
    end: int

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
# Soft hyphen, Arabic letter mark, zero-width and bidi controls, BOM.
_INVISIBLE_DELETE = _chars(
    (0x00AD, 0x00AD), (0x061C, 0x061C), (0x200B, 0x200F), (0x202A, 0x202E), (0x2066, 0x2069),
    (0xFEFF, 0xFEFF),
)  # fmt: skip
_PUNCT_FOLD = {
    **{c: "'" for c in "\u2018\u2019\u201b\u2032\u0060\u00b4\u02bc\u02bb"},
    **{c: "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"},
    **{c: " " for c in "\u00a0\u202f\u205f\u3000" + "".join(_chars((0x2000, 0x200A)))},
    **{chr(0x0660 + i): str(i) for i in range(10)},  # Arabic-Indic digits
    **{chr(0x06F0 + i): str(i) for i in range(10)},  # Persian digits
    "\u0130": "I",  # Turkish dotted capital I (İdlib): lower() would make it two characters
    "\u0131": "i",  # Turkish dotless i
}

_ARABIC_TABLE = str.maketrans({**_ARABIC_LETTER_FOLD, **dict.fromkeys(_ARABIC_DELETE)})
# Matching folds one character into one character (so offsets survive) and deletes a few.
_FOLD = {**_ARABIC_LETTER_FOLD, **_PUNCT_FOLD}
_FOLD_ITEMS = tuple(_FOLD.items())
_DELETE_CHARS = frozenset(_ARABIC_DELETE + _INVISIBLE_DELETE)
_MATCH_TABLE = str.maketrans({**_FOLD, **dict.fromkeys(_DELETE_CHARS)})
assert all(len(v) == 1 for v in _FOLD.values())
_DELETED_RE = re.compile("[" + "".join(re.escape(c) for c in sorted(_DELETE_CHARS)) + "]")


def normalize_arabic(text: str) -> str:
    """Fold Arabic spelling variants the way matching does.

    Hamza and alef forms (أ إ آ ٱ) become ا, ة becomes ه, ى becomes ي, ؤ and ئ become و and ي;
    diacritics and tatweel are removed. Other characters are left alone.
    """
    return text.translate(_ARABIC_TABLE)


class _Field:
    """A title or text prepared for matching, with the map back to original offsets.

    ``norm`` is the folded text (same case); ``low`` is a space followed by its lower-case form,
    which is what the matchers scan (the space lets every word start after a non-word character).
    """

    __slots__ = ("_shift", "index", "low", "name", "norm", "text")

    def __init__(self, name: str, index: int, text: str) -> None:
        self.name = name
        self.index = index
        self.text = text
        self._shift: list[int] | None = None
        # str.translate with a dict (or set(text)) is slow on non-ASCII text: it makes an object
        # per character. Substring tests and str.replace run in C.
        norm = text
        for c, r in _FOLD_ITEMS:
            if c in norm:
                norm = norm.replace(c, r)
        if _DELETED_RE.search(text):
            # For the j-th deleted character at original position d, d - j characters were kept
            # before it, so normalised position i sits at i + #{j : d_j - j <= i}.
            self._shift = [m.start() - j for j, m in enumerate(_DELETED_RE.finditer(text))]
            norm = _DELETED_RE.sub("", norm)
        self.norm = norm
        low = norm.lower()
        if len(low) != len(norm):  # a few characters lower-case to two (İ); keep those as they are
            low = "".join(c if len(c.lower()) != 1 else c.lower() for c in norm)
        self.low = " " + low

    def orig(self, i: int) -> int:
        """Original offset of normalised offset ``i`` (an end offset keeps trailing marks)."""
        if self._shift is None:
            return i
        return i + bisect_right(self._shift, i)


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------

_CACHE_SIZE = 20_000  # identified surfaces remembered per matcher
_SEP_RUN = re.compile(r"[\s\-]+")
_SEP_RE = r"[\s\-]+"
_AR_LETTER = re.compile("[\u0620-\u064a\u0671-\u06d3]")
# Attached clitics: conjunction و/ف, preposition ب/ل, article ال (ل + ال is written لل).
# The preposition ك (like) is left out: rare before names, and every prefix enlarges the tries.
_AR_GATE = "(?=[\u0620-\u064a])"
_AR_INNER_PREFIXES = ("", "ال", "بال", "لل", "ب", "ل")  # after an optional و or ف
_AR_INNER_ARTICLE_PREFIXES = ("ال", "بال", "لل")
_AR_PREFIXES = sorted({c + m for c in ("", "و", "ف") for m in _AR_INNER_PREFIXES}, key=len)


@dataclass(frozen=True, eq=False)
class _Entry:
    """One taxonomy entry: a topic term, support word, exclusion, place or actor."""

    label: str
    role: str  # "term" | "support" | "exclude" | "place" | "actor" | "context"
    where: str
    weight: float = 1.0
    needs: tuple[str, ...] = ()  # contexts that must all pass for this term to count
    country: str | None = None


@dataclass(frozen=True, eq=False)
class _Form:
    """One spelling of an entry as the matcher sees it."""

    entry: _Entry
    article: bool  # Arabic term written with ال: the text must have the article too
    case_rx: re.Pattern[str] | None  # case-sensitive check on the matched surface

    def accepts(self, surface: str, has_article: bool) -> bool:
        if self.article and not has_article:
            return False
        return self.case_rx is None or self.case_rx.fullmatch(surface) is not None


class _Matcher:
    """All spellings of a group of entries, compiled into one regular expression."""

    def __init__(self) -> None:
        self._exact: dict[str, list[_Form]] = {}
        self._wild: dict[str, list[_Form]] = {}
        self._min_wild = 1 << 30
        self._patterns: list[tuple[re.Pattern[str], _Entry]] = []
        self._pattern_sources: list[str] = []
        self._latin_trie: dict = {}
        self._arabic_stems: list[tuple[str, bool, bool]] = []  # key, wildcard, article
        self._seen: dict[tuple, str] = {}
        self._finder: re.Pattern[str] | None = None
        self._cache: dict[str, _Entry | None] = {}  # surface -> entry; surfaces repeat a lot

    # -- building ---------------------------------------------------------------------------

    def add_literal(self, raw: str, entry: _Entry, case_sensitive: bool) -> str | None:
        """Add one spelling; returns a problem description, or None."""
        s = raw.translate(_MATCH_TABLE).strip()
        wildcard = s.endswith("*")
        if wildcard:
            s = s[:-1].rstrip()
        if "*" in s:
            return "'*' is only allowed at the end of a term"
        tokens = [t for t in _SEP_RUN.split(s) if t]
        if not tokens:
            return "the term is empty"
        key = " ".join(tokens).lower()
        arabic = _AR_LETTER.match(key) is not None
        article = arabic and key.startswith("ال") and len(tokens[0]) > 3
        if article:
            key = key[2:]
        case_rx = None
        if case_sensitive and not arabic:
            body = _SEP_RE.join(re.escape(t) for t in tokens) + (r"\w*" if wildcard else "")
            case_rx = re.compile(body)
        ident = (key, wildcard, article, case_rx.pattern if case_rx else None)
        if ident in self._seen:
            return f"{raw!r} is listed twice (also at {self._seen[ident]})"
        self._seen[ident] = entry.where
        form = _Form(entry, article, case_rx)
        if wildcard:
            self._wild.setdefault(key, []).append(form)
            self._min_wild = min(self._min_wild, len(key))
        else:
            self._exact.setdefault(key, []).append(form)
        if arabic:
            self._arabic_stems.append((key, wildcard, article))
        else:
            _trie_add(self._latin_trie, key, wildcard)
        return None

    def add_pattern(self, raw: str, entry: _Entry, case_sensitive: bool) -> str | None:
        source = raw.translate(_MATCH_TABLE)
        if "(?-i" in source:
            return "pattern must not switch case sensitivity off inside; use case: sensitive"
        flags = 0 if case_sensitive else re.IGNORECASE
        try:
            rx = re.compile(source, flags)
        except re.error as exc:
            return f"pattern is not a valid regular expression: {exc}"
        if rx.groups:
            return "pattern must not contain capturing groups; write (?:...) instead of (...)"
        if rx.fullmatch(""):
            return "pattern matches the empty string"
        self._patterns.append((rx, entry))
        # The finder scans lower-cased text; a case-sensitive pattern is checked on the real
        # surface when the match is identified.
        self._pattern_sources.append(f"(?i:{source})")
        return None

    def compile(self) -> str | None:
        parts = []
        if self._latin_trie:
            parts.append(_emit(self._latin_trie))
        if self._arabic_stems:
            # Each stem enters the trie behind each preposition/article prefix, so the engine
            # walks one trie instead of backtracking over prefix readings (about twice as fast as
            # an optional prefix group); only the conjunction و/ف stays an optional character,
            # which keeps the expression small. The look-ahead skips all this on Latin text.
            trie: dict = {}
            for key, wildcard, article in self._arabic_stems:
                for prefix in _AR_INNER_ARTICLE_PREFIXES if article else _AR_INNER_PREFIXES:
                    _trie_add(trie, prefix + key, wildcard)
            parts.append(_AR_GATE + "[وف]?" + _emit(trie))
        parts.extend(self._pattern_sources)
        if not parts:
            self._finder = None
            return None
        try:
            # Starting with a non-word character gives the regex engine a character-set prefix,
            # so it skips the inside of words instead of trying every position.
            self._finder = re.compile(r"[^\w](?:" + "|".join(parts) + r")(?!\w)")
        except re.error as exc:  # e.g. a pattern with inline global flags
            return f"the terms cannot be combined into one expression: {exc}"
        return None

    # -- matching ---------------------------------------------------------------------------

    def find(self, fld: _Field) -> list[tuple[_Entry, int, int]]:
        """Entries found in a field, with normalised offsets, in text order."""
        if self._finder is None or not fld.norm:
            return []
        out = []
        cache = self._cache
        for m in self._finder.finditer(fld.low):
            # low = " " + lower(norm): the match's first character is the non-word character
            # before the term, so low[m.start() + 1 : m.end()] is norm[m.start() : m.end() - 1].
            start, end = m.start(), m.end() - 1
            surface = fld.norm[start:end]
            try:
                entry = cache[surface]
            except KeyError:
                entry = self._identify(fld.low[start + 1 : end + 1], surface)
                if len(cache) >= _CACHE_SIZE:
                    cache.clear()
                cache[surface] = entry
            if entry is not None:
                out.append((entry, start, end))
        return out

    def _identify(self, lowered: str, surface: str) -> _Entry | None:
        key = _SEP_RUN.sub(" ", lowered)
        if _AR_LETTER.match(key):
            for prefix in _AR_PREFIXES:  # shortest first: the literal reading wins
                if len(prefix) < len(key) and key.startswith(prefix):
                    has_article = prefix.endswith(("ال", "لل"))
                    entry = self._lookup(key[len(prefix) :], surface, has_article)
                    if entry is not None:
                        return entry
        else:
            entry = self._lookup(key, surface, False)
            if entry is not None:
                return entry
        for rx, pentry in self._patterns:
            if rx.fullmatch(surface):
                return pentry
        return None

    def _lookup(self, key: str, surface: str, has_article: bool) -> _Entry | None:
        for form in self._exact.get(key, ()):
            if form.accepts(surface, has_article):
                return form.entry
        if self._wild:
            for k in range(len(key), self._min_wild - 1, -1):
                if " " in key[k:]:
                    break  # a wildcard only extends the last word
                for form in self._wild.get(key[:k], ()):
                    if form.accepts(surface, has_article):
                        return form.entry
        return None


def _trie_add(trie: dict, key: str, wildcard: bool) -> None:
    node = trie
    for ch in key:
        node = node.setdefault(ch, {})
    if wildcard or node.get(None) != "wild":
        node[None] = "wild" if wildcard else "end"


def _emit(node: dict) -> str:
    """Regex for a character trie; longer continuations are tried before ending here."""
    alts = []
    for ch in sorted(k for k in node if k is not None):
        alts.append((_SEP_RE if ch == " " else re.escape(ch)) + _emit(node[ch]))
    end = node.get(None)
    if end == "wild":
        alts.append(r"\w*")
    elif end == "end":
        alts.append("")
    if len(alts) == 1:
        return alts[0]
    return "(?:" + "|".join(alts) + ")"


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
    max_evidence: int = 30


@dataclass(frozen=True)
class _Context:
    """A condition near a hit: another topic's terms, enough countries, or words of its own."""

    name: str
    window: int
    topic: str | None = None
    countries: frozenset[str] = frozenset()
    min_countries: int = 1
    matcher: _Matcher | None = None


@dataclass
class _Topic:
    name: str
    description: str
    threshold: float
    matcher: _Matcher = field(default_factory=_Matcher)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _needs(src: _Source, path: _Path, value: Any, contexts: dict) -> tuple[str, ...]:
    """``needs``: a context name, a list of names (all must pass), or null (none)."""
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list):
        src.fail(path, f"needs must be a context name or a list of them, got {value!r}")
    for name in names:
        if name not in contexts:
            src.fail(path, f"needs {name!r}, which is not defined under contexts")
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
        digest = hashlib.sha256()
        for src in [topics_src, *extra]:
            digest.update(src.file.name.encode() + b"\0" + src.raw.encode() + b"\0")
        self.fingerprint = digest.hexdigest()[:12]
        _check_keys(
            topics_src,
            (),
            topics_src.doc,
            {"version", "scoring", "contexts", "topics", "places", "actors"},
        )
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
        scoring = self._scoring()
        places = self._named_entries("places", "place")
        actors = self._named_entries("actors", "actor")
        countries = {e.country for e in places[1]}
        contexts = self._contexts(countries)
        topics = self._topics(contexts)
        return Tagger(
            version=version.strip(),
            scoring=scoring,
            contexts=contexts,
            topics=topics,
            places=places[0],
            actors=actors[0],
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
            max_evidence=_number(
                src, path, raw, "max_evidence", d.max_evidence, 1, 10**6, integer=True
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
                {"description", "topic_terms", "countries", "min_countries", "terms", "window"},
            )
            window = int(_number(src, path, spec, "window", None, 0, 10**9, integer=True))
            if sum(k in spec for k in ("topic_terms", "countries", "terms")) != 1:
                src.fail(path, "give exactly one of topic_terms, countries or terms")
            if "terms" in spec:
                items = spec["terms"]
                if not isinstance(items, list) or not items:
                    src.fail(path, "terms must be a non-empty list")
                matcher = _Matcher()
                for i, item in enumerate(items):
                    ipath = (*path, "terms", i)
                    if isinstance(item, str):
                        item = {"term": item}
                    if not isinstance(item, dict) or not isinstance(item.get("term"), str):
                        src.fail(ipath, "a term must be text or a mapping with term:")
                    _check_keys(src, ipath, item, {"term", "variants", "pattern", "case"})
                    entry = _Entry(item["term"].strip(), "context", _fmt_path(ipath))
                    self._add_forms(src, matcher, ipath, item, entry)
                problem = matcher.compile()
                if problem:
                    src.fail(path, problem)
                out[name] = _Context(name, window, matcher=matcher)
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
            out[name] = _Context(name, window, countries=frozenset(names), min_countries=minimum)
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
                {"description", "threshold", "needs", "terms", "support", "exclude"},
            )
            threshold = _number(src, path, spec, "threshold", None, 0, 1)
            needs = _needs(src, path, spec.get("needs"), contexts)
            description = spec.get("description") or ""
            if not isinstance(description, str):
                src.fail(path, "description must be text")
            topic = _Topic(name, description.strip(), threshold)
            if not spec.get("terms"):
                src.fail(path, "terms is missing or empty: a topic needs at least one term")
            for role, key in (("term", "terms"), ("support", "support"), ("exclude", "exclude")):
                items = spec.get(key) or []
                if not isinstance(items, list):
                    src.fail((*path, key), f"{key} must be a list")
                for i, item in enumerate(items):
                    self._topic_entry(topic.matcher, (*path, key, i), item, role, needs, contexts)
            problem = topic.matcher.compile()
            if problem:
                src.fail(path, problem)
            out[name] = topic
        return out

    def _topic_entry(
        self,
        matcher: _Matcher,
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
            allowed |= {"weight", "needs"}
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
        entry = _Entry(label.strip(), role, _fmt_path(path), weight, needs)
        self._add_forms(src, matcher, path, item, entry)

    def _add_forms(
        self, src: _Source, matcher: _Matcher, path: _Path, item: dict, entry: _Entry
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
            problem = matcher.add_pattern(pattern, entry, sensitive)
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
            problem = matcher.add_literal(spelling, entry, sensitive)
            if problem:
                src.fail(at, problem)

    # -- places and actors ------------------------------------------------------------------

    def _named_entries(self, section: str, role: str) -> tuple[_Matcher, list[_Entry]]:
        matcher, entries = _Matcher(), []
        if section not in self.sections:
            matcher.compile()
            return matcher, entries
        src, raw = self.sections[section]
        if not isinstance(raw, list):
            src.fail((section,), f"{section} must be a list of {{name, terms}} entries")
        names: set[str] = set()
        for i, item in enumerate(raw):
            path: _Path = (section, i)
            if not isinstance(item, dict):
                src.fail(path, f"each {role} must be a mapping with name and terms")
            _check_keys(
                src, path, item, {"name", "terms"} | ({"country"} if role == "place" else set())
            )
            name = item.get("name")
            if not isinstance(name, str) or not name.strip():
                src.fail(path, "name must be non-empty text")
            name = name.strip()
            if name in names:
                src.fail(path, f"{name!r} is listed twice")
            names.add(name)
            country = item.get("country", name if role == "place" else None)
            if role == "place" and (not isinstance(country, str) or not country.strip()):
                src.fail(path, "country must be non-empty text")
            terms = item.get("terms")
            if not isinstance(terms, list) or not terms:
                src.fail(path, "terms must be a non-empty list")
            entry = _Entry(name, role, _fmt_path(path), country=country)
            entries.append(entry)
            for j, term in enumerate(terms):
                tpath = (*path, "terms", j)
                if isinstance(term, str):
                    term = {"term": term}
                if not isinstance(term, dict):
                    src.fail(tpath, f"a term must be text or a mapping with term:, got {term!r}")
                _check_keys(src, tpath, term, {"term", "variants", "pattern", "case"})
                if not isinstance(term.get("term"), str) or not term["term"].strip():
                    src.fail(tpath, "term must be non-empty text")
                self._add_forms(src, matcher, tpath, term, entry)
        problem = matcher.compile()
        if problem:
            src.fail((section,), problem)
        return matcher, entries


# --------------------------------------------------------------------------------------------
# The tagger
# --------------------------------------------------------------------------------------------

_Hit = tuple[_Entry, int, int, int]  # entry, field index (0 title, 1 text), start, end (normalised)


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
        places: _Matcher,
        actors: _Matcher,
        source: Path | None = None,
        fingerprint: str = "",
    ) -> None:
        self.version = version
        self.source = source
        # A hash of the taxonomy files: tells an edited taxonomy whose version was not bumped.
        self.fingerprint = fingerprint
        self._scoring = scoring
        self._contexts = contexts
        self._topics = topics
        self._places = places
        self._actors = actors

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

        ``language`` is accepted as a hint; every term is tried whatever the language, because
        Arabic articles quote English names and English ones transliterate Arabic.
        """
        topics, places, actors = self._analyse(title, text)
        given = tuple(tag for tag, passed in topics if passed)
        return TagResult(given, places, actors)

    def explain(
        self, title: str | None, text: str | None, language: str | None = None
    ) -> dict[str, Any]:
        """Every topic's score and evidence, also below the threshold: for tuning the taxonomy."""
        topics, places, actors = self._analyse(title, text)
        return {
            "version": self.version,
            "topics": [
                {**tag.to_dict(), "threshold": self._topics[tag.topic].threshold, "given": passed}
                for tag, passed in topics
            ],
            "places": list(places),
            "actors": list(actors),
        }

    # -- internals --------------------------------------------------------------------------

    def _analyse(
        self, title: str | None, text: str | None
    ) -> tuple[list[tuple[TopicTag, bool]], tuple[str, ...], tuple[str, ...]]:
        fields = (_Field("title", 0, title or ""), _Field("text", 1, text or ""))
        hits = {
            name: [(e, f.index, s, t) for f in fields for e, s, t in topic.matcher.find(f)]
            for name, topic in self._topics.items()
        }
        place_hits = [(e, f.index, s, t) for f in fields for e, s, t in self._places.find(f)]
        actor_hits = [(e, f.index, s, t) for f in fields for e, s, t in self._actors.find(f)]

        lede = self._scoring.lede_chars
        spots: dict[str, _Spots] = {}  # per context: the hits it looks for, indexed

        def context_ok(hit: _Hit) -> bool:
            for name in hit[0].needs:
                ctx = self._contexts[name]
                if name not in spots:
                    if ctx.topic is not None:
                        found = [h for h in hits[ctx.topic] if h[0].role == "term"]
                    elif ctx.matcher is not None:
                        found = [
                            (e, f.index, s, t) for f in fields for e, s, t in ctx.matcher.find(f)
                        ]
                    else:
                        found = [h for h in place_hits if h[0].country in ctx.countries]
                    spots[name] = _Spots(found, lede)
                near = spots[name].near(hit, ctx.window)
                if ctx.countries:
                    if len({h[0].country for h in near}) < ctx.min_countries:
                        return False
                elif not near:
                    return False
            return True

        results = []
        for name in TOPICS:
            topic = self._topics[name]
            anchors = [h for h in hits[name] if h[0].role == "term" and context_ok(h)]
            support = [h for h in hits[name] if h[0].role == "support"] if anchors else []
            score = round(self._score(anchors, support, len(fields[1].text)), 3)
            # Anchors first when the evidence must be cut, then in reading order (title first).
            evidence = (anchors + support)[: self._scoring.max_evidence]
            evidence.sort(key=lambda h: (h[1], h[2]))
            tag = TopicTag(
                name,
                score,
                tuple(
                    Evidence(e.label, fields[fi].name, fields[fi].orig(s), fields[fi].orig(t))
                    for e, fi, s, t in evidence
                ),
            )
            results.append((tag, bool(anchors) and score >= topic.threshold))
        return results, _names(place_hits), _names(actor_hits)

    def _score(self, anchors: list[_Hit], support: list[_Hit], text_len: int) -> float:
        if not anchors:
            return 0.0
        sc = self._scoring
        density = max(1.0, math.sqrt(text_len / sc.reference_chars))

        def total(group: list[_Hit]) -> float:
            seen: Counter = Counter()
            title_sum = text_sum = 0.0
            for entry, fi, start, _ in sorted(group, key=lambda h: (h[1], h[2])):
                weight = entry.weight * sc.repeat_decay ** seen[(entry, fi)]
                seen[(entry, fi)] += 1
                if fi == 0:
                    title_sum += weight * sc.title_weight
                else:
                    text_sum += weight
            return title_sum + text_sum / density

        anchor_total = total(anchors)
        raw = anchor_total + min(sc.support_cap, anchor_total, total(support))
        return 1.0 - math.exp(-raw / sc.scale)


class _Spots:
    """Hits a context looks for, indexed to answer "which are near this hit?".

    Near means: anywhere in the title; for a hit in the title, also the first ``lede`` characters
    of the text; for a hit in the text, within ``window`` characters of it.
    """

    def __init__(self, hits: list[_Hit], lede: int) -> None:
        self.title = [h for h in hits if h[1] == 0]
        self.text = [h for h in hits if h[1] == 1]  # in text order, as the matchers found them
        self.starts = [h[2] for h in self.text]
        self.longest = max((h[3] - h[2] for h in self.text), default=0)
        self.in_lede = bisect_left(self.starts, lede)

    def near(self, hit: _Hit, window: int) -> list[_Hit]:
        _, fi, start, end = hit
        if fi == 0:
            return self.title + self.text[: self.in_lede]
        lo = bisect_left(self.starts, start - window - self.longest)
        hi = bisect_right(self.starts, end + window)
        return self.title + [c for c in self.text[lo:hi] if c[3] >= start - window]


def _names(hits: list[_Hit]) -> tuple[str, ...]:
    """Canonical names in order of first mention (title first), without repeats."""
    return tuple(dict.fromkeys(e.label for e, *_ in sorted(hits, key=lambda h: (h[1], h[2]))))


@lru_cache(maxsize=1)
def get_tagger() -> Tagger:
    """The tagger for the bundled taxonomy, built once per process."""
    return Tagger.from_path(None)
