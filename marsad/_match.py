"""Where the tagger's Latin phrase expression matches, found without trying it after every space.

The tagger (:mod:`marsad.tagging`) matches Latin phrases with one regular expression over a
projection of the text: ``b" (?:<trie of phrases>)(?![0-9a-z\\x80-\\xff])"``, where a space
inside a phrase stands for ``" +"`` and a phrase ending in a wildcard for ``[a-z0-9]*``. Python's
engine tries that expression after every space, about a tenth of a microsecond each time, and
nearly every word of an article starts no phrase at all: on a 5 KB article that is half the
tagging time.

:class:`PhraseFinder` runs an Aho-Corasick automaton (ahocorasick_rs, the Rust aho-corasick
crate) over the projection once instead, with each phrase written the way it appears in the
common case, and asks the expression only where that case cannot settle the match:

``" words "``
    the phrase's words joined by single spaces, with a space on either side (the projection is
    searched with a space appended, so a phrase may end the text): the phrase is there, whole. At
    a start where only such phrases were found, the expression would match the longest of them.
``" words  "``
    the first words of a phrase, then two spaces: the phrase may go on after a run of spaces
    ("U.S.-led" projects to "u s  led"), or not; the expression decides at that start.
``" stem"``
    a phrase that ends in a wildcard: it runs to the end of the word (letters of the wildcard's
    script only), or, where another phrase starts at the same place, the expression decides.

A projection holds only spaces, ASCII letters and digits and bytes above 0x7f (Arabic letters),
so "not followed by a letter or digit" is "followed by a space or the end", which is what the
surrounding spaces check. Starts inside an earlier match are skipped, as ``finditer`` does.
Without ahocorasick_rs the expression is run over the whole projection: same spans, slower.

The Arabic expression is searched the same way: its phrases are written out with every clitic
prefix and attached pronoun the expression allows. That expression tries a leading و or ف as a
conjunction before reading it as the word's first letter, so it does not always match the
longest phrase; such phrases are given with ``ask`` set, and where one is found the expression
decides, as for phrases that go on after a run of spaces.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

try:
    import ahocorasick_rs
except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
    ahocorasick_rs = None


_UNSURE = 1 << 28  # taken from the start of a phrase after which the expression must decide
# (twice for a wildcard): small enough for one-digit ints (fast); longer texts run the expression.


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
        self._shifts: list[int] = []  # per pattern of the automaton: what its start is marked by
        self._ahocorasick = ahocorasick_rs  # as found when the taxonomy was loaded
        self.compiled = ahocorasick_rs is not None  # False: every search runs the expression

    @property
    def rx(self) -> re.Pattern[bytes]:
        if self._rx is None:
            assert self._make_rx is not None
            self._rx = self._make_rx()
        return self._rx

    def spans(self, projection: bytes) -> dict[int, int]:
        if not self.compiled or len(projection) >= _UNSURE:
            return {m.start(): m.end() for m in self.rx.finditer(projection)}
        automaton = self._automaton if self._automaton is not None else self._build()
        shifts = self._shifts
        # The automaton reports every (pattern, start, end) in order of end, so the longest
        # phrase at a start is the last one kept. A whole phrase is keyed by its start; minus
        # _UNSURE where the expression must decide, minus 2 * _UNSURE for a wildcard. Its value
        # is the index of its last byte (the space after a whole phrase).
        found = {
            start - shifts[i]: end - 1
            for i, start, end in automaton.find_matches_as_indexes(
                projection + b" ", overlapping=True
            )
        }
        if not found:
            return {}
        starts = sorted(found)
        spans = {}
        end = 0
        if starts[0] >= 0:  # the common case: every phrase found whole
            for start in starts:
                if start >= end:  # not inside the previous match
                    end = spans[start] = found[start]
            return spans
        k = bisect_left(starts, 0)
        unsure = set()
        extra = []  # starts to add to the whole phrases' (starts[k:], sorted)
        for key in starts[:k]:
            if key >= -_UNSURE:  # the first words of a phrase, then a run of spaces
                start = key + _UNSURE
            else:
                start = key + 2 * _UNSURE
                if start not in found and start - _UNSURE not in found:
                    # A wildcard alone at its start runs to the end of the word, if the word
                    # goes on in the wildcard's script.
                    after = found[key] + 1
                    stop = projection.find(b" ", after)
                    stop = len(projection) if stop < 0 else stop
                    rest = projection[after:stop]
                    if not rest or (min(rest) >= 0x80 if self._high else rest.isascii()):
                        found[start] = stop
                        extra.append(start)
                    continue
            if start not in unsure:  # another phrase starts here too: the expression decides
                unsure.add(start)
                if start not in found:
                    extra.append(start)
        starts = starts[k:]
        if extra:
            starts += extra
            starts.sort()  # one sorted run and a few more: cheap
        rx = self._rx if self._rx is not None else self.rx
        for start in starts:
            if start < end:
                continue  # inside the previous match
            if start not in unsure:
                end = spans[start] = found[start]
            else:
                m = rx.match(projection, start)
                if m is not None:
                    end = spans[start] = m.end()
        return spans

    def _build(self) -> Any:
        patterns: dict[str, int] = {}  # the phrase as written -> its shift
        phrases = self._phrases() if callable(self._phrases) else self._phrases
        self._phrases = []  # in the automaton now
        asked = set()
        for key, wildcard, *ask in phrases:
            words = key.split(" ")
            for k in range(1, len(words)):
                patterns[" " + " ".join(words[:k]) + "  "] = _UNSURE
            if wildcard:
                patterns[" " + key] = 2 * _UNSURE
            elif ask and ask[0]:
                asked.add(key)
            elif key not in asked:
                patterns[" " + key + " "] = 0
        for key in asked:  # whatever else the same key was given as
            patterns[" " + key + " "] = _UNSURE
        # Every pattern starts with a space, and the library would skip from space to space
        # (memchr), slower than its automaton on text where every fifth byte is one: patterns
        # of bytes no projection holds (below 0x20 but for the deleted marks' 0x01) turn that
        # skipping off.
        never = [bytes((b, b)) for b in range(2, 6)]
        Implementation = self._ahocorasick.Implementation
        automaton = self._ahocorasick.BytesAhoCorasick(
            [p.encode("latin-1") for p in patterns] + never,
            # A DFA is the fastest; for the Arabic phrases (every clitic and pronoun written out,
            # tens of thousands) it would take 55 MB more than the compact NFA, for no gain.
            implementation=Implementation.ContiguousNFA if self._high else Implementation.DFA,
        )
        self._shifts = [*patterns.values(), *(0 for _ in never)]
        self._automaton = automaton
        return automaton
