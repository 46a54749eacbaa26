"""Full-text search (marsad/search.py, migration 0006) on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from alembic import command
from sqlalchemy import Engine, delete, func, select, text, update
from sqlalchemy.orm import Session

from marsad.db import _alembic_config, session_scope
from marsad.errors import InputError
from marsad.search import (
    _DELETED,
    _LETTER_FOLD,
    ELLIPSIS,
    MARK_END,
    MARK_START,
    MAX_QUERY_CHARS,
    MIN_STEM,
    Clause,
    Query,
    arabic_forms,
    fold_arabic,
    parse_query,
    search,
)
from marsad.store import write_tags
from models import Article

DAY = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)

HAMRIN = (
    "Iraqi forces kill three Islamic State fighters in Hamrin hideout raid",
    (
        "KIRKUK - Iraqi counter-terrorism troops killed three Islamic State fighters and detained a "
        "fourth in a dawn raid on a cave hideout in the Hamrin mountains, the Joint Operations Command "
        "said on Tuesday. The cell had planned attacks on checkpoints along the road between Kirkuk "
        "and Tikrit and had stored explosives and forged identity papers in the cave."
    ),
)
WHEAT = (
    "Wheat prices ease in Damascus markets after a good harvest",
    (
        "Bread and flour prices fell for the third week running in Damascus markets as farmers in "
        "Hasakah brought in the largest wheat harvest in five years, traders said. The state of the "
        "roads was good and Islamic charities handed out flour."
    ),
)
# Written with hamza on alef, ta marbuta, alef maqsura, some harakat and a tatweel, as in print.
AMMAN = (
    "الأردن والعراق يتفقان على تبادل المعلومات لمكافحة داعش",
    (
        "عمان ــ اتفق وزيرا الداخلية في الأردنِ والعراق خلال اجتماعٍ عُقد في عمان على تعزيز التعاون "
        "الأمني بين أجهزة البلدين لمواجهة خلايا تنظيم داعش وضبط الحدود. وقال مسؤولٌ إن المـكافحة "
        "مستمرة وإن الدَّوريات ستتواصل على الحدود مع سوريا حتى نهاية السنة."
    ),
)


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with session_scope(engine) as session:
        yield session


def store(
    session: Session,
    slug: str,
    title: str | None,
    body: str | None,
    *,
    language: str | None = "en",
    published: datetime | None = DAY,
    topics: tuple[str, ...] = (),
) -> int:
    """Store an article as an ingest does (the index follows by itself), with its tags."""
    link = f"https://news.example/{slug}"
    article = Article(
        canonical_url=link,
        url=link + "?utm_source=feed",
        guid=link,
        title=title,
        text=body,
        language=language,
        published_at=published,
        discovered_at=(published or DAY) - timedelta(minutes=5),
        extraction_status="ok",
    )
    session.add(article)
    session.flush()
    tags = [
        {
            "topic": topic,
            "score": 1.0,
            "evidence": [{"term": topic, "field": "text", "start": 0, "end": 1}],
        }
        for topic in topics
    ]
    write_tags(session, article.id, tags, "test", DAY)
    session.flush()
    return article.id


def ids(hits: list) -> list[int]:
    return [hit.id for hit in hits]


@pytest.fixture
def corpus(session: Session) -> dict[str, int]:
    return {
        "hamrin": store(session, "hamrin", *HAMRIN, topics=("isis",), published=DAY),
        "wheat": store(session, "wheat", *WHEAT, published=DAY - timedelta(days=3)),
        "amman": store(
            session,
            "amman",
            *AMMAN,
            language="ar",
            topics=("isis", "regional_cooperation"),
            published=DAY - timedelta(days=1),
        ),
    }


# English --------------------------------------------------------------------------------------


def test_english_words_are_found_in_titles_and_texts_whatever_their_case(
    session: Session, corpus: dict[str, int]
) -> None:
    assert ids(search(session, "hamrin")) == [corpus["hamrin"]]
    assert ids(search(session, "KIRKUK")) == [corpus["hamrin"]]  # in the text only
    assert ids(search(session, "wheat Damascus")) == [corpus["wheat"]]
    assert ids(search(session, "hamrin wheat")) == []  # every word must occur
    assert search(session, "Mosul") == []
    hit = search(session, "hamrin")[0]
    assert hit.url == "https://news.example/hamrin"  # canonical, no tracking parameters
    assert hit.title == HAMRIN[0]
    assert hit.published_at == DAY
    assert hit.topics == ["isis"]


def test_english_articles_are_stemmed_on_postgresql_only(
    session: Session, corpus: dict[str, int], db_url: str
) -> None:
    assert ids(search(session, "fighters")) == [corpus["hamrin"]]  # as written: both backends
    stemmed = ids(search(session, "fighter"))
    if db_url.startswith("postgresql"):
        assert stemmed == [corpus["hamrin"]]
        assert ids(search(session, "killing checkpoint")) == [corpus["hamrin"]]
    else:
        assert stemmed == []


def test_latin_accents_are_folded_on_sqlite_only(session: Session, db_url: str) -> None:
    article = store(session, "turkiye", "Türkiye and Iraq talk water", "Ankara hosted talks.")
    assert ids(search(session, "Türkiye")) == [article]
    assert ids(search(session, "turkiye")) == ([] if db_url.startswith("postgresql") else [article])


# Arabic ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("الأردن", "as written"),
        ("الاردن", "bare alef for hamza on alef"),
        ("الإردن", "hamza under alef"),
        ("الآردن", "madda on alef"),
        ("الأرْدُن", "with harakat"),
        ("الأردنِ", "the kasra the text has"),
        ("الـأردن", "with tatweel"),
    ],
)
def test_arabic_words_are_found_with_or_without_hamza_forms_harakat_and_tatweel(
    session: Session, corpus: dict[str, int], query: str, why: str
) -> None:
    assert ids(search(session, query)) == [corpus["amman"]], why


def test_arabic_letter_variants_in_the_text_are_folded_too(
    session: Session, corpus: dict[str, int]
) -> None:
    # The text writes مسؤولٌ, المـكافحة, الدَّوريات, مستمرة, على, حتى.
    for query in ("مسوول", "مسؤول", "المكافحة", "المكافحه", "الدوريات", "مستمره", "علي", "حتي"):
        assert ids(search(session, query)) == [corpus["amman"]], query
    assert ids(search(session, "داعش سوريا")) == [corpus["amman"]]
    assert search(session, "بغداد") == []


def test_the_index_folds_exactly_as_queries_do(engine: Engine) -> None:
    sample = "".join(_LETTER_FOLD) + "".join(sorted(_DELETED)) + " كَتَبَ ـ الأردنّ"
    expected = fold_arabic(sample)
    assert expected == "".join(_LETTER_FOLD.values()) + " كتب  الاردن"
    with session_scope(engine) as session:
        if engine.dialect.name == "postgresql":
            folded = session.scalar(select(func.marsad_fold_arabic(sample)))
        else:
            article = store(session, "fold", sample, sample)
            folded = session.execute(
                text("SELECT title FROM articles_fts_source WHERE id = :id"), {"id": article}
            ).scalar_one()
    assert folded == expected


# Arabic words with attached prefixes: each article below has its word in one form only.
PREFIXED = {
    "and_syria": ("لقاء أمني في عمان", "بحث الوزراء التعاون بين الأردن وسوريا في ضبط الحدود."),
    "syria": ("سوريا تعلن إغلاق معبر", "أغلقت السلطات المعبر الحدودي أمام الشاحنات."),
    "and_iraq": ("وفد تركي في بغداد", "وصل الوفد لبحث التعاون الاقتصادي بين تركيا والعراق."),
    "anbar": ("عملية في الصحراء", "شنت القوات عملية واسعة في صحراء الأنبار الغربية."),
    "for_army": ("دعم حكومي", "قدمت الحكومة دعما للجيش في نينوى."),
    "the_army": ("انسحاب من البلدة", "انسحب الجيش من البلدة بعد الاشتباكات."),
    "to_him": ("تصريح", "قال له المسؤول إن الوضع هادئ."),
    "god": ("خطبة الجمعة", "ردد المصلون اسم الله في المسجد."),
    "metre": ("سد جديد", "يرتفع السد مئة م فوق النهر."),
}


@pytest.fixture
def prefixed(session: Session) -> dict[str, int]:
    return {
        key: store(session, f"prefixed-{key}", title, body, language="ar")
        for key, (title, body) in PREFIXED.items()
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("سوريا", {"and_syria", "syria"}),  # وسوريا: "and Syria"
        ("وسوريا", {"and_syria", "syria"}),  # and the other way round
        ("العراق", {"and_iraq"}),  # والعراق
        ("عراق", {"and_iraq"}),
        ("والعراق", {"and_iraq"}),
        ("بالعراق", {"and_iraq"}),
        ("أنبار", {"anbar"}),  # الأنبار
        ("انبار", {"anbar"}),
        ("الانبار", {"anbar"}),
        ("جيش", {"for_army", "the_army"}),  # للجيش, الجيش
        ("الجيش", {"for_army", "the_army"}),
        ("للجيش", {"for_army", "the_army"}),
        ("وللجيش", {"for_army", "the_army"}),
        ('"الأردن وسوريا"', {"and_syria"}),  # a phrase matches as written
        ('"الأردن سوريا"', set()),
    ],
)
def test_arabic_words_are_found_with_and_without_attached_prefixes(
    session: Session, prefixed: dict[str, int], query: str, expected: set[str]
) -> None:
    assert set(ids(search(session, query))) == {prefixed[key] for key in expected}


def test_short_arabic_words_keep_their_prefix_letters(
    session: Session, prefixed: dict[str, int]
) -> None:
    # الله is not ال + له, nor ألم (pain) ال + م: a prefix leaves at least MIN_STEM letters.
    assert ids(search(session, "الله")) == [prefixed["god"]]
    assert ids(search(session, "له")) == [prefixed["to_him"]]
    assert search(session, "ألم") == []
    assert ids(search(session, "م")) == [prefixed["metre"]]
    # والي (governor) is not و + إلى: only the longest prefix is tried, and وال leaves one letter.
    assert fold_arabic("إلى") not in arabic_forms("والي")
    assert "له" not in arabic_forms("الله") and arabic_forms("له") == ("له",)
    assert all(len(form) >= MIN_STEM for form in arabic_forms("العراق"))


def test_prefixed_words_are_excluded_and_marked_like_any_other(
    session: Session, prefixed: dict[str, int]
) -> None:
    assert set(ids(search(session, "التعاون"))) == {prefixed["and_syria"], prefixed["and_iraq"]}
    assert ids(search(session, "التعاون -سوريا")) == [prefixed["and_iraq"]]
    hit = next(hit for hit in search(session, "سوريا") if hit.id == prefixed["and_syria"])
    assert f"{MARK_START}وسوريا{MARK_END}" in hit.snippet
    [hit] = search(session, "عراق")
    assert f"{MARK_START}والعراق{MARK_END}" in hit.snippet


def test_prefixes_leave_english_and_other_scripts_alone(
    session: Session, corpus: dict[str, int]
) -> None:
    for word in ("wall", "ball", "fighters", "Islamic State", "2014", "العراق 2014"):
        assert arabic_forms(word) == (word,)
    assert parse_query("wall -ballot").fts5() == '(("wall") NOT ("ballot"))'
    assert ids(search(session, "hamrin")) == [corpus["hamrin"]]
    assert search(session, "all") == []  # "wall" or "ball" with a prefix taken off: not English


# Query syntax ----------------------------------------------------------------------------------


def test_quoted_phrases_need_the_words_together(session: Session, corpus: dict[str, int]) -> None:
    # The wheat story has "state" and "Islamic" apart; the Hamrin story has "Islamic State".
    assert set(ids(search(session, "islamic state"))) == {corpus["hamrin"], corpus["wheat"]}
    assert ids(search(session, '"islamic state"')) == [corpus["hamrin"]]
    assert ids(search(session, '"state islamic"')) == []
    assert ids(search(session, '"الحدود مع سوريا"')) == [corpus["amman"]]


def test_or_and_exclusion(session: Session, corpus: dict[str, int]) -> None:
    assert set(ids(search(session, "hamrin OR wheat"))) == {corpus["hamrin"], corpus["wheat"]}
    assert set(ids(search(session, "hamrin or داعش"))) == {corpus["hamrin"], corpus["amman"]}
    # OR separates alternatives, as in websearch_to_tsquery: (hamrin) or (wheat and tikrit).
    assert ids(search(session, "hamrin OR wheat tikrit")) == [corpus["hamrin"]]
    assert set(ids(search(session, "cave tikrit OR flour bread"))) == {
        corpus["hamrin"],
        corpus["wheat"],
    }
    assert ids(search(session, "cave flour OR tikrit bread")) == []
    assert ids(search(session, "islamic -wheat")) == [corpus["hamrin"]]
    assert ids(search(session, 'islamic -"islamic state"')) == [corpus["wheat"]]
    assert ids(search(session, "islamic -hamrin -bread")) == []
    assert ids(search(session, "داعش -الأردن")) == []
    # An exclusion belongs to its alternative.
    assert set(ids(search(session, "islamic -hamrin OR داعش"))) == {
        corpus["wheat"],
        corpus["amman"],
    }


def test_parse_query_reads_words_phrases_or_and_exclusions() -> None:
    assert parse_query('hamrin "Islamic  State" -raid OR daesh -"dawn raid"') == Query(
        (Clause(("hamrin", "Islamic State"), ("raid",)), Clause(("daesh",), ("dawn raid",)))
    )
    assert parse_query("OR a OR OR b or") == Query((Clause(("a",)), Clause(("b",))))
    assert parse_query('"unclosed phrase') == Query((Clause(("unclosed phrase",)),))
    assert parse_query("الأردنُ") == Query((Clause(("الاردن",)),))
    # Every item is an FTS5 string.
    query = parse_query('NEAR(a b) x* -e OR "c OR d"')
    assert query.fts5() == '(("NEAR(a" AND "b)" AND "x*") NOT ("e")) OR ("c OR d")'


@pytest.mark.parametrize(
    "query",
    ["", "   ", "!!!", '"" ()', "* - -- OR", "؟،؛", "ـــ", "\u064e\u0650", "\x00\x01"],
)
def test_a_query_without_words_is_an_input_error(session: Session, query: str) -> None:
    with pytest.raises(InputError, match="no words to look for"):
        search(session, query)


def test_a_query_that_only_excludes_is_an_input_error(session: Session) -> None:
    with pytest.raises(InputError, match="the search query only excludes words"):
        search(session, "-hamrin -wheat")
    with pytest.raises(InputError, match=r"an alternative \(between ORs\) only excludes words"):
        search(session, "hamrin OR -wheat")


def test_overlong_queries_are_input_errors(session: Session) -> None:
    with pytest.raises(InputError, match="too long"):
        search(session, "a" * (MAX_QUERY_CHARS + 1))
    with pytest.raises(InputError, match="too many words"):
        search(session, " ".join(f"w{n}" for n in range(40)))


@pytest.mark.parametrize(
    "query",
    [
        '"',
        '"""',
        "hamrin'",
        "'; DROP TABLE articles; --",
        "hamrin) OR (1=1",
        "NEAR(hamrin raid, 5)",
        "NEAR/3",
        "ham*",
        "^hamrin",
        "title:hamrin",
        "hamrin AND NOT raid",
        "hamrin & raid | !wheat",
        "hamrin:* <-> raid",
        "\\hamrin\\",
        "hamrin\x00raid",
        "ham\ud800rin",
        "{hamrin} [raid] <b>raid</b>",
        "%_hamrin%",
        "$$ hamrin $$",
        "-",
        "- hamrin",
        "hamrin -",
        "OR",
        "hamrin OR",
        "hamrin " * 30,
        "x" * MAX_QUERY_CHARS,
        "ا" * 300 + " " + "b" * 300,
        "中" * MAX_QUERY_CHARS,
        "😀x" * (MAX_QUERY_CHARS // 3),
        "\u064e" * 50 + "hamrin",
    ],
)
def test_hostile_queries_give_results_or_an_input_error_never_a_database_error(
    session: Session, corpus: dict[str, int], query: str
) -> None:
    try:
        hits = search(session, query)
    except InputError:
        return
    assert all(hit.id in corpus.values() for hit in hits)
    # The session is still usable and nothing was dropped.
    assert session.scalar(select(func.count()).select_from(Article)) == 3


def test_hostile_queries_still_search_for_their_words(
    session: Session, corpus: dict[str, int]
) -> None:
    assert ids(search(session, "hamrin)")) == [corpus["hamrin"]]
    assert ids(search(session, "(hamrin")) == [corpus["hamrin"]]
    assert ids(search(session, "NEAR(hamrin raid)")) == []  # the words "near", "hamrin", "raid"
    assert ids(search(session, "hamrin AND wheat")) == []  # AND is no operator: "and" is a word
    assert ids(search(session, "hamrin*")) == [corpus["hamrin"]]
    assert ids(search(session, "'hamrin'")) == [corpus["hamrin"]]


# Filters, ranking, snippets --------------------------------------------------------------------


def test_topic_and_half_open_date_filters(session: Session, corpus: dict[str, int]) -> None:
    undated = store(session, "undated", "Hamrin road reopens", "Traffic resumed.", published=None)
    query = "hamrin OR wheat OR داعش"
    assert set(ids(search(session, query))) == {*corpus.values(), undated}
    assert set(ids(search(session, query, topic="isis"))) == {corpus["hamrin"], corpus["amman"]}
    assert ids(search(session, query, topic="regional_cooperation")) == [corpus["amman"]]
    assert search(session, query, topic="coalition") == []
    # since is inclusive, until exclusive, on the publication time (or first seen when undated).
    assert set(ids(search(session, query, since=DAY))) == {corpus["hamrin"]}
    assert set(ids(search(session, query, until=DAY))) == {
        corpus["wheat"],
        corpus["amman"],
        undated,
    }
    assert ids(
        search(session, query, since=DAY - timedelta(days=1), until=DAY - timedelta(minutes=5))
    ) == [corpus["amman"]]
    assert ids(search(session, query, since=DAY - timedelta(minutes=5), until=DAY)) == [undated]
    assert ids(search(session, query, limit=1)) != []
    assert len(search(session, query, limit=2)) == 2


def test_bad_limits_and_naive_dates_are_input_errors(session: Session) -> None:
    with pytest.raises(InputError, match="limit"):
        search(session, "hamrin", limit=0)
    with pytest.raises(InputError, match="time zone"):
        search(session, "hamrin", since=datetime(2026, 1, 1))


def test_a_title_match_ranks_above_a_match_in_the_text_then_newest_first(session: Session) -> None:
    filler = "Officials met on Monday to discuss the budget and the roads. " * 3
    in_text = store(
        session, "in-text", "Budget talks resume", filler + "A convoy left Tikrit. Tikrit was calm."
    )
    in_title = store(
        session, "in-title", "Convoy reaches Tikrit", filler, published=DAY - timedelta(days=9)
    )
    assert ids(search(session, "tikrit")) == [in_title, in_text]
    # Equally relevant: the newest first.
    older = store(session, "older", "Sinjar", "Sinjar.", published=DAY - timedelta(days=2))
    newer = store(session, "newer", "Sinjar", "Sinjar.", published=DAY - timedelta(days=1))
    assert ids(search(session, "sinjar")) == [newer, older]


def test_snippets_mark_the_matched_words_in_the_text(
    session: Session, corpus: dict[str, int]
) -> None:
    [hit] = search(session, "kirkuk tikrit")
    assert (
        f"{MARK_START}Kirkuk{MARK_END}" in hit.snippet
        or f"{MARK_START}KIRKUK{MARK_END}" in hit.snippet
    )
    assert f"{MARK_START}Tikrit{MARK_END}" in hit.snippet
    assert "\n" not in hit.snippet and "  " not in hit.snippet
    # A long text is cut around the match, and says so.
    long_text = (
        "Nothing happened in the morning. " * 40
        + "Then a patrol found a cache near Baiji. "
        + ("The afternoon was quiet. " * 40)
    )
    article = store(session, "long", "A long day", long_text)
    [hit] = search(session, "baiji")
    assert hit.id == article
    assert f"{MARK_START}Baiji{MARK_END}" in hit.snippet
    assert hit.snippet.startswith(ELLIPSIS) and hit.snippet.endswith(ELLIPSIS)
    assert len(hit.snippet) < 400


def test_arabic_snippets_keep_the_original_spelling(
    session: Session, corpus: dict[str, int]
) -> None:
    [hit] = search(session, "الاردن")
    assert f"{MARK_START}الأردنِ{MARK_END}" in hit.snippet  # hamza and kasra kept, inside the marks
    [hit] = search(session, "المكافحه")
    assert f"{MARK_START}المـكافحة{MARK_END}" in hit.snippet
    [hit] = search(session, "الدوريات")
    assert f"{MARK_START}الدَّوريات{MARK_END}" in hit.snippet
    assert "عمان ــ" in hit.snippet or hit.snippet.startswith(ELLIPSIS)


def test_an_article_without_text_gets_its_title_as_snippet(session: Session) -> None:
    article = store(session, "title-only", "Mortar fire reported near Sinjar", None)
    [hit] = search(session, "sinjar")
    assert hit.id == article
    assert hit.snippet == f"Mortar fire reported near {MARK_START}Sinjar{MARK_END}"


# The index follows the articles ----------------------------------------------------------------


def test_the_index_follows_updates_and_deletes(engine: Engine) -> None:
    with session_scope(engine) as session:
        article = store(session, "followed", "Summary only", "A short feed summary about Baiji.")
    with session_scope(engine) as session:
        assert ids(search(session, "baiji")) == [article]
        # What extraction does when the page arrives, and retag's bookkeeping updates.
        session.execute(
            update(Article)
            .where(Article.id == article)
            .values(
                text="The full page: a patrol found weapons near Haditha.", title="Weapons found"
            ),
            execution_options={"synchronize_session": False},
        )
        session.execute(
            update(Article)
            .where(Article.id == article)
            .values(tagged_with="v9", next_fetch_at=DAY),
            execution_options={"synchronize_session": False},
        )
    with session_scope(engine) as session:
        assert search(session, "baiji") == []
        assert search(session, "summary") == []
        assert ids(search(session, "haditha weapons")) == [article]
        [hit] = search(session, "haditha")
        assert f"{MARK_START}Haditha{MARK_END}" in hit.snippet
        session.execute(update(Article).where(Article.id == article).values(text=None))
    with session_scope(engine) as session:
        assert search(session, "haditha") == []
        assert ids(search(session, "weapons")) == [article]
        session.execute(delete(Article).where(Article.id == article))
    with session_scope(engine) as session:
        assert search(session, "weapons") == []
        if engine.dialect.name == "sqlite":
            # The FTS5 index agrees with its content, row for row.
            session.execute(
                text("INSERT INTO articles_fts(articles_fts, rank) VALUES ('integrity-check', 1)")
            )


def test_articles_stored_before_the_migration_are_indexed_by_it(engine: Engine) -> None:
    config = _alembic_config(engine)
    command.downgrade(config, "0005")
    try:
        with session_scope(engine) as session:
            store(session, "old", "Old news", "An old story about Rutba.")
    finally:
        command.upgrade(config, "head")
    with session_scope(engine) as session:
        [hit] = search(session, "rutba")
        assert f"{MARK_START}Rutba{MARK_END}" in hit.snippet
