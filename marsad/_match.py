"""Where the tagger's Latin phrase expression matches, found without trying it after every space.

The tagger (:mod:`marsad.tagging`) matches Latin phrases with one regular expression over a
projection of the text: ``b" (?:<trie of phrases>)(?![0-9a-z\\x80-\\xff])"``, where a space
inside a phrase stands for ``" +"`` and a phrase ending in a wildcard for ``[a-z0-9]*``. Python's
engine tries that expression after every space, about a tenth of a microsecond each time, and
nearly every word of an article starts no phrase at all: on a 5 KB article that is half the
tagging time.

:class:`PhraseFinder` runs an Aho-Corasick automaton (pyahocorasick, in C) over the projection
once instead, with each phrase written the way it appears in the common case, and asks the
expression only where that case cannot settle the match:

``" words "``
    the phrase's words joined by single spaces, with a space on either side (the projection is
    searched with a space appended, so a phrase may end the text): the phrase is there, whole. At
    a start where only such phrases were found, the expression would match the longest of them.
``" words  "``
    the first words of a phrase, then two spaces: the phrase may go on after a run of spaces
    ("U.S.-led" projects to "u s  led"), or not; the expression decides at that start.
``" stem"``
    a phrase that ends in a wildcard: the expression decides where its last word ends.

A projection holds only spaces, ASCII letters and digits and bytes above 0x7f (Arabic letters),
so "not followed by a letter or digit" is "followed by a space or the end", which is what the
surrounding spaces check. Starts inside an earlier match are skipped, as ``finditer`` does.
Without pyahocorasick the expression is run over the whole projection: same spans, slower.

The Arabic expression is searched the same way (``longest=False``): its phrases are written out
with every clitic prefix and attached pronoun the expression allows. That expression tries a
leading و or ف as a conjunction before reading it as the word's first letter, so it does not
always match the longest phrase: where two whole phrases start at one place, it decides.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

try:
    import ahocorasick
except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
    ahocorasick = None


_UNSURE = 1 << 40  # added to the length of a phrase after which the expression must decide


class PhraseFinder:
    """The spans of ``rx`` in a projection: ``{m.start(): m.end() for m in rx.finditer(p)}``.

    ``phrases`` are the phrases compiled into ``rx``: their projected keys (words joined by one
    space) and whether each ends in a wildcard. Either may be given as a function that makes it:
    it is called on first use, as the automaton is built, so that taxonomies loaded only to be
    validated (or texts of one script only) do not pay for them.
    """

    def __init__(
        self,
        phrases: Iterable[tuple[str, bool]] | Callable[[], Iterable[tuple[str, bool]]],
        rx: re.Pattern[bytes] | Callable[[], re.Pattern[bytes]],
        *,
        longest: bool = True,
    ) -> None:
        self._phrases = phrases if callable(phrases) else list(phrases)
        self._make_rx = rx if callable(rx) else None
        self._rx: re.Pattern[bytes] | None = None if callable(rx) else rx
        self._longest = longest  # the expression matches the longest phrase at a start
        self._automaton: Any = None
        self._ahocorasick = ahocorasick  # as found when the taxonomy was loaded
        self.compiled = ahocorasick is not None  # False: every search runs the expression

    @property
    def rx(self) -> re.Pattern[bytes]:
        if self._rx is None:
            assert self._make_rx is not None
            self._rx = self._make_rx()
        return self._rx

    def spans(self, projection: bytes) -> dict[int, int]:
        if not self.compiled:
            return {m.start(): m.end() for m in self.rx.finditer(projection)}
        automaton = self._automaton if self._automaton is not None else self._build()
        # The automaton reports (end, v) in order of end. end - v is the start of a whole phrase
        # (so the longest phrase at a start is the last one kept), or, where the expression
        # must decide, that start minus _UNSURE.
        matches = automaton.iter(projection.decode("latin-1") + " ")
        if self._longest:
            found = {end - v: end for end, v in matches}
        else:
            reported = list(matches)
            found = {end - v: end for end, v in reported}
            if len(found) < len(reported):  # a start reported twice
                found = {}
                for end, v in reported:
                    start = end - v
                    if start >= 0 and start in found:  # two phrases start here: ask the expression
                        found[start - _UNSURE] = end
                    found[start] = end
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
        unsure = {key + _UNSURE for key in starts[:k]}
        starts = sorted(unsure.union(starts[k:]))
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
        automaton = self._ahocorasick.Automaton()
        phrases = self._phrases() if callable(self._phrases) else self._phrases
        self._phrases = []  # in the automaton now
        for key, wildcard in phrases:
            words = key.split(" ")
            for k in range(1, len(words)):
                head = " " + " ".join(words[:k]) + "  "
                automaton.add_word(head, len(head) - 1 + _UNSURE)
            if wildcard:
                automaton.add_word(" " + key, len(key) + _UNSURE)
            else:
                automaton.add_word(" " + key + " ", len(key) + 1)
        automaton.make_automaton()
        self._automaton = automaton
        return automaton
