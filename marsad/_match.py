"""Where the tagger's Latin phrase expression matches, found without trying it after every space.

The tagger (:mod:`marsad.tagging`) matches Latin phrases with one regular expression over a
projection of the text: ``b" (?:<trie of phrases>)(?![0-9a-z\\x80-\\xff])"``, where a space
inside a phrase stands for ``" +"`` and a phrase ending in a wildcard for ``[a-z0-9]*``. Python's
engine tries that expression after every space, about a tenth of a microsecond each time, and
nearly every word of an article starts no phrase at all: on a 5 KB article that is half the
tagging time.

:class:`PhraseFinder` runs an Aho-Corasick automaton (ahocorasick_rs, the Rust aho-corasick
crate) over the projection once instead, in leftmost-longest mode: at each place, the longest
phrase that starts there, and no match inside it. Each phrase is written the way it appears in
the common case, and the expression is asked only where that case cannot settle the match:

``" words"``
    the phrase's words joined by single spaces, after a space. The expression tries longer
    continuations first, as the automaton does, so the longest phrase at a start is its answer
    too, when it ends a word (a space or the end follows: a projection holds only spaces, ASCII
    letters and digits and bytes above 0x7f, so "not followed by a letter or digit" is "followed
    by a space or the end"). When it does not end a word, a shorter phrase might: the expression
    decides, unless the phrase is one word that no wildcard or asked phrase begins (then no
    phrase starts there).
``" words  "``
    the first words of a phrase, then two spaces: the phrase may go on after a run of spaces
    ("U.S.-led" projects to "u s  led"), or not; the expression decides at that start.
``" stem"`` (a phrase ending in a wildcard)
    it runs to the end of the word, when the rest of the word is in the wildcard's script;
    otherwise the expression decides.

Where the expression decided on a shorter match than the automaton's, a phrase could start in
between, at a space the automaton went past: the expression is asked there too. Starts inside
an earlier match are skipped, as ``finditer`` does. Without ahocorasick_rs the expression is run
over the whole projection: same spans, slower.

The Arabic expression is searched the same way: its phrases are written out with every clitic
prefix and attached pronoun the expression allows. That expression tries a leading و or ف as a
conjunction before reading it as the word's first letter, so it does not always match the
longest phrase; such phrases are given with ``ask`` set, and where one is found the expression
decides, as for phrases that go on after a run of spaces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

try:
    import ahocorasick_rs
except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
    ahocorasick_rs = None


# What a phrase of the automaton is, for the loop in PhraseFinder.spans. _WORD: one word, and no
# wildcard or asked phrase is a prefix of it, so that when it does not end a word, nothing starts
# there. _ASK: the expression decides (also the heads "words  ").
_WORD, _WHOLE, _WILD, _ASK = 0, 1, 2, 3
_LONGEST = 1 << 28  # longer projections run the expression (one-digit ints stay fast)


class PhraseFinder:
    """The spans of ``rx`` in a projection: ``{m.start(): m.end() for m in rx.finditer(p)}``.

    ``phrases`` are the phrases compiled into ``rx``: their projected keys (words joined by one
    space), whether each ends in a wildcard, and optionally whether the expression must decide
    where it is found (``ask``). Either may be given as a function that makes it:
    it is called on first use, as the automaton is built, so that taxonomies loaded only to be
    validated (or texts of one script only) do not pay for them.
    """

    def __init__(
        self,
        phrases: Iterable[tuple] | Callable[[], Iterable[tuple]],
        rx: re.Pattern[bytes] | Callable[[], re.Pattern[bytes]],
        *,
        high: bool = False,
    ) -> None:
        self._phrases = phrases if callable(phrases) else list(phrases)
        self._make_rx = rx if callable(rx) else None
        self._rx: re.Pattern[bytes] | None = None if callable(rx) else rx
        self._high = high  # wildcards run over bytes above 0x7f (Arabic), else [a-z0-9]
        self._automaton: Any = None
        self._kinds: list[int] = []  # per pattern of the automaton: _WHOLE, _WILD or _ASK
        self._ahocorasick = ahocorasick_rs  # as found when the taxonomy was loaded
        self.compiled = ahocorasick_rs is not None  # False: every search runs the expression

    @property
    def rx(self) -> re.Pattern[bytes]:
        if self._rx is None:
            assert self._make_rx is not None
            self._rx = self._make_rx()
        return self._rx

    def spans(self, projection: bytes) -> dict[int, int]:
        if not self.compiled or len(projection) >= _LONGEST:
            return {m.start(): m.end() for m in self.rx.finditer(projection)}
        automaton = self._automaton if self._automaton is not None else self._build()
        kinds = self._kinds
        n = len(projection)
        spans: dict[int, int] = {}
        end = 0  # a start before this is inside a match given already
        for i, start, stop in automaton.find_matches_as_indexes(projection):
            if start >= end:
                kind = kinds[i]
                if kind <= _WHOLE:
                    if stop == n or projection[stop] == 32:
                        end = spans[start] = stop
                        continue
                    if kind == _WORD:  # a longer word: no phrase starts here
                        end = start + 1
                        continue
                elif kind == _WILD:
                    word_end = projection.find(b" ", stop)
                    word_end = n if word_end < 0 else word_end
                    rest = projection[stop:word_end]
                    if not rest or (min(rest) >= 0x80 if self._high else rest.isascii()):
                        end = spans[start] = word_end
                        continue
                end = self._decide(projection, start, start + 1, spans)
            if stop > end:
                # The automaton went past starts that the answers so far leave open.
                end = self._decide(projection, end, stop, spans)
        return spans

    def _decide(self, projection: bytes, start: int, stop: int, spans: dict[int, int]) -> int:
        """Ask the expression at each space in projection[start:stop] that no match given here
        covers (a phrase starts at the last space before its first word); returns where the next
        start may be."""
        rx = self._rx if self._rx is not None else self.rx
        end = start
        at = start
        while at < stop:
            at = projection.find(b" ", at, stop)
            if at < 0:
                break
            if at >= end:
                m = rx.match(projection, at)
                if m is not None:
                    end = spans[at] = m.end()
                    at = end
                    continue
            at += 1
        return max(end, stop)

    def _build(self) -> Any:
        kinds: dict[str, int] = {}  # the phrase as the automaton has it -> its kind
        phrases = self._phrases() if callable(self._phrases) else self._phrases
        self._phrases = []  # in the automaton now
        for key, wildcard, *ask in phrases:
            words = key.split(" ")
            for k in range(1, len(words)):
                kinds[" " + " ".join(words[:k]) + "  "] = _ASK
            kind = _ASK if ask and ask[0] else _WILD if wildcard else _WHOLE
            # One phrase written as several: asking wins; a wildcard covers the word alone.
            kinds[" " + key] = max(kind, kinds.get(" " + key, _WHOLE))
        unsure = {p for p, kind in kinds.items() if kind >= _WILD}
        for p, kind in kinds.items():
            if kind == _WHOLE and " " not in p[1:]:
                if not any(p[:k] in unsure for k in range(2, len(p))):
                    kinds[p] = _WORD
        # Every pattern starts with a space, and the library would skip from space to space
        # (memchr), slower than its automaton on text where every fifth byte is one: patterns
        # of bytes no projection holds (below 0x20 but for the deleted marks' 0x01) turn that
        # skipping off.
        never = [bytes((b, b)) for b in range(2, 6)]
        ac = self._ahocorasick
        automaton = ac.BytesAhoCorasick(
            [p.encode("latin-1") for p in kinds] + never,
            matchkind=ac.MatchKind.LeftmostLongest,
            # A DFA is the fastest; for the Arabic phrases (every clitic and pronoun written out,
            # tens of thousands) it would take 55 MB more than the compact NFA, for no gain.
            implementation=ac.Implementation.ContiguousNFA if self._high else ac.Implementation.DFA,
        )
        self._kinds = [*kinds.values(), *(_ASK for _ in never)]
        self._automaton = automaton
        return automaton
