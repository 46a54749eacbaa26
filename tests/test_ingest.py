"""The ingest flow end to end under Prefect's harness, on SQLite and PostgreSQL, against a loopback web."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select, update

from loopback import LoopbackServer
from marsad import ingest as stages
from marsad.config import get_settings, reset_settings
from marsad.db import session_scope
from marsad.feeds import FeedSpec
from marsad.store import add_feeds
from models import Article, ArticleTag, DateSource, ExtractionStatus, Feed, FetchEvent, IngestRun
from webdata import ARABIC_PARAGRAPHS, CHROME, ENGLISH_PARAGRAPHS, Item, article_page, rss

pytestmark = pytest.mark.usefixtures("prefect_harness", "allow_loopback")


@pytest.fixture(autouse=True)
def _poll_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests rerun ingests back to back: let every feed fall due at once (adaptive polling
    is tested on its own in test_polling.py)."""
    monkeypatch.setenv("MARSAD_POLL_MIN_MINUTES", "0.01")
    reset_settings()


def run_ingest(feed_urls: list[str] | None = None) -> stages.RunSummary:
    from flows.ingest import ingest

    # The flow's own return value: a state read back from Prefect's API can lack its data.
    return ingest(feed_urls=feed_urls)


def summary_artifact(flow_run_id: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return artifact.data


def add(engine: Engine, *urls: str, language: str | None = None) -> None:
    with session_scope(engine) as session:
        add_feeds(session, [FeedSpec(url=url, language=language) for url in urls])


def articles(engine: Engine) -> list[Article]:
    with session_scope(engine) as session:
        return list(session.scalars(select(Article).order_by(Article.id)))


def serve_news(server: LoopbackServer) -> str:
    """One English feed of two articles; returns the feed URL."""
    server.add("/news/cell.html", article_page("Four suspects held after desert raid", ENGLISH_PARAGRAPHS))
    server.add(
        "/news/border.html",
        article_page("Iraq and Jordan agree on border intelligence sharing", ARABIC_PARAGRAPHS, lang="ar"),
    )
    feed = rss(
        "Frontier Wire",
        [
            Item("Four suspects held after desert raid", server.url("/news/cell.html"), "fw-1",
                 "Security forces detained four suspects."),
            Item("اتفاق أمني بين العراق والأردن", server.url("/news/border.html"), "fw-2",
                 "وفد عراقي يزور عمّان."),
        ],
    )
    server.add("/feed.xml", feed, content_type="application/rss+xml", etag='"feed-v1"')
    return server.url("/feed.xml")


def test_new_items_are_stored_once_clean_and_tagged(engine: Engine, http_server: LoopbackServer) -> None:
    feed_url = serve_news(http_server)
    add(engine, feed_url)

    summary = run_ingest()

    assert (summary.feeds_ok, summary.articles_new, summary.articles_stored) == (1, 2, 2)
    stored = {a.canonical_url: a for a in articles(engine)}
    english, arabic = stored[http_server.url("/news/cell.html")], stored[http_server.url("/news/border.html")]
    assert english.title == "Four suspects held after desert raid"
    assert english.extraction_status == ExtractionStatus.OK
    assert ENGLISH_PARAGRAPHS[0] in english.text
    assert not any(chrome in english.text for chrome in CHROME)
    assert english.language == "en"
    assert english.published_at is not None and english.date_source == DateSource.FEED
    assert english.site_name == "Frontier Wire"
    assert arabic.language == "ar"
    assert ARABIC_PARAGRAPHS[1] in arabic.text
    with session_scope(engine) as session:
        topics = {
            (tag.article_id, tag.topic) for tag in session.scalars(select(ArticleTag))
        }
        run = session.scalars(select(IngestRun)).one()
    assert (english.id, "isis") in topics
    assert (arabic.id, "regional_cooperation") in topics
    assert run.status == "completed" and run.articles_new == 2
    # The run leaves its summary as a Prefect artifact of its flow run.
    markdown = summary_artifact(run.flow_run_id)
    assert f"# Ingest run {run.id}: completed" in markdown and "| 1 | 1 | 0 | 0 | 2 | 2 |" in markdown
    # A line per feed (status, new articles, seconds), and the flow run's status and duration.
    assert "| feed | status | new articles | seconds | failure |" in markdown
    assert f"| {feed_url} | ok | 2 | " in markdown
    assert "| status | started (UTC) | seconds |" in markdown and "| completed | " in markdown


def test_rerun_adds_nothing_and_sends_conditional_requests(
    engine: Engine, http_server: LoopbackServer
) -> None:
    feed_url = serve_news(http_server)
    add(engine, feed_url)
    run_ingest()

    second = run_ingest()

    assert second.articles_new == 0 and second.feeds_unchanged == 1
    assert len(articles(engine)) == 2
    with session_scope(engine) as session:
        statuses = [e.status for e in session.scalars(select(FetchEvent).order_by(FetchEvent.id))]
    assert statuses == ["ok", "not_modified"]
    feed_requests = http_server.requests_for("/feed.xml")
    assert len(feed_requests) == 2
    assert feed_requests[1].headers.get("if-none-match") == '"feed-v1"'
    # Known URLs are not fetched again.
    assert len(http_server.requests_for("/news/cell.html")) == 1


def test_unchanged_body_without_validators_is_not_parsed_again(
    engine: Engine, http_server: LoopbackServer
) -> None:
    http_server.add("/plain.xml", rss("Plain", [Item("A story", http_server.url("/gone.html"), "p-1", "Summary.")]))
    add(engine, http_server.url("/plain.xml"))
    run_ingest()
    second = run_ingest()
    assert second.feeds_unchanged == 1
    with session_scope(engine) as session:
        statuses = [e.status for e in session.scalars(select(FetchEvent).order_by(FetchEvent.id))]
    assert statuses == ["ok", "unchanged"]


def test_tracking_parameter_duplicates_collapse_into_one_article(
    engine: Engine, http_server: LoopbackServer
) -> None:
    page = http_server.url("/news/cell.html")
    http_server.add("/news/cell.html", article_page("Four suspects held", ENGLISH_PARAGRAPHS))
    http_server.add("/a.xml", rss("A", [Item("Four suspects held", page + "?utm_source=rss&utm_medium=feed", "a-1")]))
    http_server.add("/b.xml", rss("B", [Item("Four suspects held", page + "#comments", "b-1"),
                                        Item("Same again", page + "?fbclid=xyz", "b-2")]))
    add(engine, http_server.url("/a.xml"), http_server.url("/b.xml"))

    summary = run_ingest()

    assert summary.articles_new == 1
    (article,) = articles(engine)
    assert article.canonical_url == page
    assert len(http_server.requests_for("/news/cell.html")) == 1


def test_a_404_page_keeps_its_feed_summary(engine: Engine, http_server: LoopbackServer) -> None:
    http_server.add("/feed.xml", rss("Wire", [
        Item("Removed story", http_server.url("/news/removed.html"), "r-1",
             "Officials in Deir ez-Zor said an ISIS cell attacked a checkpoint overnight."),
    ]))
    add(engine, http_server.url("/feed.xml"))

    summary = run_ingest()

    (article,) = articles(engine)
    assert article.extraction_status == ExtractionStatus.GONE
    assert article.http_status == 404
    assert article.text == "Officials in Deir ez-Zor said an ISIS cell attacked a checkpoint overnight."
    assert article.extraction_method == "feed_summary"
    assert summary.failures == {"page:http_404": 1}


def test_a_broken_feed_is_recorded_and_the_others_go_on(
    engine: Engine, http_server: LoopbackServer
) -> None:
    good = serve_news(http_server)
    http_server.add("/broken.xml", "internal error", status=500, content_type="text/plain")
    http_server.add("/home.html", article_page("Welcome", ["Our homepage."]))
    # An emoji as two surrogate character references makes feedparser itself raise.
    http_server.add("/emoji.xml", rss("Smile &#55357;&#56832;", []).replace(b"&amp;#", b"&#"))
    # A link longer than the URL column is skipped; the feed's other item is kept.
    http_server.add("/long.xml", rss("Long", [
        Item("Too long", http_server.url("/news/" + "x" * 2100), "l-1"),
        Item("Fine", http_server.url("/news/fine.html"), "l-2", "A fine summary."),
    ]))
    add(engine, good, *(http_server.url(p) for p in ("/broken.xml", "/home.html", "/emoji.xml", "/long.xml")))

    summary = run_ingest()

    assert (summary.feeds_ok, summary.feeds_failed, summary.articles_new) == (2, 3, 3)
    assert summary.failures == {
        "feed:http_500": 1, "feed:not_a_feed": 1, "feed:parser_error": 1,
        "item:link_too_long": 1, "page:http_404": 1,
    }
    with session_scope(engine) as session:
        feeds = {f.url: f for f in session.scalars(select(Feed))}
    broken, not_a_feed = feeds[http_server.url("/broken.xml")], feeds[http_server.url("/home.html")]
    assert broken.last_status == "failed" and broken.error_count == 1
    assert "500" in broken.last_error
    assert not_a_feed.last_status == "failed" and "not an RSS or Atom feed" in not_a_feed.last_error
    # Backoff: a failing feed waits longer than a healthy one's first adaptive interval.
    assert broken.next_poll_at > stages.utcnow() + timedelta(minutes=10)
    assert feeds[good].poll_interval_minutes == 0.01
    assert feeds[good].next_poll_at <= stages.utcnow()


def test_retry_after_is_honoured_within_reason(engine: Engine, http_server: LoopbackServer) -> None:
    http_server.add("/busy.xml", "slow down", status=429, headers={"Retry-After": "7200"})
    http_server.add("/absurd.xml", "slow down", status=503, headers={"Retry-After": "999999999999"})
    http_server.add("/news/busy.html", "later", status=503, headers={"Retry-After": "999999999999"})
    http_server.add("/ok.xml", rss("Ok", [Item("Busy page", http_server.url("/news/busy.html"), "b-1", "Teaser.")]))
    add(engine, *(http_server.url(p) for p in ("/busy.xml", "/absurd.xml", "/ok.xml")))

    summary = run_ingest()

    assert summary.failures == {"feed:http_429": 1, "feed:http_503": 1, "page:http_503": 1}
    now = stages.utcnow()
    with session_scope(engine) as session:
        feeds = {f.url: f for f in session.scalars(select(Feed))}
        (article,) = session.scalars(select(Article)).all()
    assert feeds[http_server.url("/busy.xml")].next_poll_at >= now + timedelta(seconds=7000)
    # An absurd Retry-After parks a feed or a page for a day at most, not for centuries.
    assert now + timedelta(hours=20) < feeds[http_server.url("/absurd.xml")].next_poll_at <= now + timedelta(days=1)
    assert article.extraction_status == ExtractionStatus.FETCH_FAILED
    assert now + timedelta(hours=20) < article.next_fetch_at <= now + timedelta(days=1)


def test_a_private_address_is_refused(engine: Engine) -> None:
    # 127.0.0.2 is loopback but outside MARSAD_ALLOW_HOSTS=127.0.0.1: the fetcher must refuse it.
    with LoopbackServer("127.0.0.2") as forbidden:
        forbidden.add("/feed.xml", rss("Inside", []))
        add(engine, forbidden.url("/feed.xml"))
        summary = run_ingest()
        assert forbidden.requests == []
    assert summary.failures == {"feed:blocked_address": 1}


def test_an_item_link_to_a_private_address_keeps_the_summary(
    engine: Engine, http_server: LoopbackServer
) -> None:
    with LoopbackServer("127.0.0.3") as forbidden:
        forbidden.add("/secret.html", article_page("Internal", ENGLISH_PARAGRAPHS))
        http_server.add("/feed.xml", rss("Wire", [Item("Sneaky", forbidden.url("/secret.html"), "s-1", "Teaser.")]))
        add(engine, http_server.url("/feed.xml"))
        run_ingest()
        assert forbidden.requests == []
    (article,) = articles(engine)
    assert article.extraction_status == ExtractionStatus.BLOCKED
    assert article.text == "Teaser."


def test_transient_page_failures_are_retried_in_a_later_run(
    engine: Engine, http_server: LoopbackServer
) -> None:
    http_server.add("/news/flaky.html", "try later", status=503, content_type="text/plain")
    http_server.add("/feed.xml", rss("Wire", [Item("Flaky story", http_server.url("/news/flaky.html"), "f-1", "Short teaser.")]))
    add(engine, http_server.url("/feed.xml"))
    run_ingest()
    (article,) = articles(engine)
    assert article.extraction_status == ExtractionStatus.FETCH_FAILED
    assert article.text == "Short teaser." and article.next_fetch_at > stages.utcnow()

    http_server.add("/news/flaky.html", article_page("Flaky story", ENGLISH_PARAGRAPHS))
    with session_scope(engine) as session:  # the retry time has come
        session.execute(update(Article).values(next_fetch_at=stages.utcnow() - timedelta(seconds=1)))
    run_ingest()

    (article,) = articles(engine)
    assert article.extraction_status == ExtractionStatus.OK
    assert article.fetch_attempts == 2
    assert ENGLISH_PARAGRAPHS[1] in article.text


def test_items_recorded_before_a_crash_are_fetched_by_the_next_run(
    engine: Engine, http_server: LoopbackServer
) -> None:
    feed_url = serve_news(http_server)
    add(engine, feed_url)
    settings = get_settings()
    # A run that recorded its feed's items and then died before fetching any page.
    run_id = stages.open_run(engine)
    outcomes = stages.parse_feeds(stages.poll_feeds(engine, settings))
    stages.record_feeds(engine, settings, run_id, outcomes)
    with session_scope(engine) as session:  # its page leases expire
        session.execute(update(Article).values(next_fetch_at=None))
        session.execute(update(Feed).values(next_poll_at=None))

    summary = run_ingest()

    assert summary.articles_new == 0 and summary.articles_stored == 2
    assert {a.extraction_status for a in articles(engine)} == {ExtractionStatus.OK}


def test_overlapping_runs_claim_each_feed_and_page_once(engine: Engine, http_server: LoopbackServer) -> None:
    feed_url = serve_news(http_server)
    add(engine, feed_url)
    settings = get_settings()

    first = stages.poll_feeds(engine, settings)
    overlapping = stages.poll_feeds(engine, settings)
    assert len(first) == 1 and overlapping == []

    for _ in range(2):  # recording the same items twice stores them once
        stages.record_feeds(engine, settings, stages.open_run(engine), stages.parse_feeds(first))
    assert len(articles(engine)) == 2
    # A retried record step within one run writes each feed's event once.
    run_id = stages.open_run(engine)
    stages.record_feeds(engine, settings, run_id, stages.parse_feeds(first))
    retried = stages.record_feeds(engine, settings, run_id, stages.parse_feeds(first))
    assert retried.feeds_ok == 0 and retried.articles_new == 0
    with session_scope(engine) as session:
        events = session.scalars(select(FetchEvent).where(FetchEvent.run_id == run_id)).all()
    assert len(events) == 1
    assert len(stages.claim_pages(engine, settings)) == 2
    assert stages.claim_pages(engine, settings) == []


def test_dates_fall_back_from_feed_to_page_to_fetch_time(engine: Engine, http_server: LoopbackServer) -> None:
    http_server.add("/news/future.html", article_page("Future", ENGLISH_PARAGRAPHS, published="2026-11-08T07:00:00+00:00"))
    http_server.add("/news/nodate.html", "<html><body><p>" + " ".join(ENGLISH_PARAGRAPHS) + "</p></body></html>")
    http_server.add("/feed.xml", rss("Wire", [
        Item("Future", http_server.url("/news/future.html"), "d-1", pub_date="Fri, 01 Jan 2100 00:00:00 +0000"),
        Item("No date", http_server.url("/news/nodate.html"), "d-2", pub_date="not a date"),
    ]))
    add(engine, http_server.url("/feed.xml"))
    run_ingest()
    future, nodate = articles(engine)
    assert future.date_source == DateSource.PAGE
    assert future.published_at.isoformat() == "2026-11-08T07:00:00+00:00"
    assert nodate.date_source == DateSource.FETCHED
    assert nodate.published_at == nodate.fetched_at


def test_control_characters_never_reach_the_database(engine: Engine, http_server: LoopbackServer) -> None:
    # XML forbids raw NUL, so smuggle it as a character reference the way broken feeds do.
    body = rss("Wire", [Item("Title&#0; with NUL", http_server.url("/x.html"), "c-1", "Sum&#0;mary")])
    http_server.add("/feed.xml", body.replace(b"&amp;#0;", b"&#0;"))
    page = article_page("Title with NUL", ENGLISH_PARAGRAPHS)
    http_server.add("/x.html", page.replace(b"Security forces", b"Security\x00 forces", 1))
    add(engine, http_server.url("/feed.xml"))
    run_ingest()
    with session_scope(engine) as session:
        count = session.scalar(select(func.count()).select_from(Article))
        article = session.scalars(select(Article)).one()
    assert count == 1
    assert article.extraction_status == ExtractionStatus.OK
    assert "\x00" not in article.title and "\x00" not in article.text
    assert "Security forces in eastern Syria" in article.text or "Security forces" in article.text.replace("  ", " ")


def test_two_runs_claiming_at_once_split_the_feeds(engine: Engine) -> None:
    """Real concurrency: two threads claim at the same instant; each feed goes to one of them."""
    import threading

    from marsad.store import claim_feeds

    add(engine, *(f"https://wire{i}.example/rss" for i in range(30)))
    barrier = threading.Barrier(2)
    claimed: list[list[int]] = [[], []]

    def claim(slot: int) -> None:
        now = stages.utcnow()
        barrier.wait()
        with session_scope(engine) as session:
            claimed[slot] = [f.id for f in claim_feeds(session, now=now, lease_until=now + timedelta(hours=1))]

    threads = [threading.Thread(target=claim, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed[0] + claimed[1]) == sorted(set(claimed[0] + claimed[1]))
    assert len(claimed[0]) + len(claimed[1]) == 30


def test_copies_of_one_story_across_outlets_share_a_cluster(engine: Engine, http_server: LoopbackServer) -> None:
    from test_clusters import OTHER_STORY, REPUBLISHED, WIRE

    http_server.add("/wire/raid.html", article_page("Four held in desert raid", [WIRE], site="Wire"))
    http_server.add("/post/raid.html", article_page("Cell members detained near Mayadin", [REPUBLISHED], site="Post"))
    http_server.add("/monitor/attack.html", article_page("Checkpoint attack kills two", [OTHER_STORY], site="Monitor"))
    http_server.add("/wire.xml", rss("Wire", [Item("Four held in desert raid", http_server.url("/wire/raid.html"), "w-1")]))
    http_server.add("/post.xml", rss("Post", [
        Item("Cell members detained near Mayadin", http_server.url("/post/raid.html"), "p-1"),
        Item("Checkpoint attack kills two", http_server.url("/monitor/attack.html"), "p-2"),
    ]))
    add(engine, http_server.url("/wire.xml"), http_server.url("/post.xml"))

    run_ingest()

    clusters = {a.canonical_url.rsplit("/", 2)[-2]: a.cluster_id for a in articles(engine)}
    assert clusters["wire"] == clusters["post"]
    assert clusters["monitor"] != clusters["wire"]


def test_restoring_an_article_keeps_the_versions_of_unchanged_tags(
    engine: Engine, http_server: LoopbackServer
) -> None:
    add(engine, serve_news(http_server))
    run_ingest()
    with session_scope(engine) as session:  # as if an older taxonomy had given these tags
        session.execute(update(ArticleTag).values(tagger_version="old"))
        session.execute(update(Article).values(
            extraction_status=ExtractionStatus.FETCH_FAILED, next_fetch_at=stages.utcnow() - timedelta(seconds=1)))
        before = {(t.article_id, t.topic) for t in session.scalars(select(ArticleTag))}

    assert run_ingest().articles_stored == 2  # both pages fetched and stored again

    with session_scope(engine) as session:
        after = {(t.article_id, t.topic): t.tagger_version for t in session.scalars(select(ArticleTag))}
    assert set(after) == before and set(after.values()) == {"old"}
