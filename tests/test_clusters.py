"""Story clusters: near-duplicate copies share a cluster; different stories never merge."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, select

from marsad.clusters import ClusterSettings, assign_cluster, band_hashes, signature, similarity
from marsad.db import session_scope
from models import Article, StoryBand

WIRE = (
    "Security forces in eastern Syria detained four suspected members of an Islamic State cell on "
    "Sunday after a week of surveillance near the town of Mayadin, provincial officials said. The "
    "suspects were accused of planting roadside bombs along the desert highway and of collecting "
    "money from local traders under threat, according to a statement from the security committee. "
    "Residents said the raid lasted several hours and that weapons and explosives were seized from "
    "two houses on the edge of the town. No casualties were reported among the forces, and the "
    "detainees were taken to Deir ez-Zor for questioning, the statement added."
)
# The same wire story as a second outlet runs it: its own opening line, one sentence cut.
REPUBLISHED = (
    "DEIR EZ-ZOR (Euphrates Post) — " + WIRE.replace(
        " Residents said the raid lasted several hours and that weapons and explosives were seized "
        "from two houses on the edge of the town.", ""
    ) + " Read more on our security page."
)
# Another story about the same kind of event, written independently.
OTHER_STORY = (
    "An attack on a checkpoint south of Mayadin killed two members of the local security forces late "
    "on Saturday, a monitoring group reported. Gunmen on motorcycles opened fire before fleeing into "
    "the desert, and a search operation was launched at dawn with support from drones. The Islamic "
    "State group has not claimed the attack, but officials blamed its cells, which have stepped up "
    "hit-and-run raids in the Badia in recent months while avoiding open confrontation with troops. "
    "The province has seen at least six such attacks since the start of the month."
)
T0 = datetime(2026, 11, 9, 8, 0, tzinfo=timezone.utc)


def test_copies_are_similar_and_different_stories_are_not() -> None:
    wire, copy, other = signature(WIRE), signature(REPUBLISHED), signature(OTHER_STORY)
    assert similarity(wire, copy) >= 0.6
    assert similarity(wire, other) < 0.2
    assert signature("Too short to compare: a teaser of one sentence.") is None
    assert (signature(WIRE) == wire).all()  # stable: the same text, the same signature


def _article(session, url: str, text: str, when: datetime) -> Article:
    article = Article(canonical_url=url, url=url, text=text, published_at=when, discovered_at=when)
    session.add(article)
    session.flush()
    return article


def test_clusters_in_the_database(engine: Engine) -> None:
    settings = ClusterSettings(threshold=0.6, window=timedelta(days=3))
    with session_scope(engine) as session:
        first = _article(session, "https://wire.example/1", WIRE, T0)
        copy = _article(session, "https://post.example/1", REPUBLISHED, T0 + timedelta(hours=5))
        other = _article(session, "https://monitor.example/9", OTHER_STORY, T0 + timedelta(hours=6))
        late = _article(session, "https://archive.example/1", WIRE, T0 + timedelta(days=10))
        teaser = _article(session, "https://short.example/1", "ISIS cell detained near Mayadin.", T0)
        results = [assign_cluster(session, a.id, a.text, a.published_at, settings)
                   for a in (first, copy, other, late, teaser)]
    assert results == [first.id, first.id, other.id, late.id, teaser.id]
    with session_scope(engine) as session:
        stored = {a.id: a.cluster_id for a in session.scalars(select(Article))}
        bands = session.scalars(select(StoryBand.article_id).distinct()).all()
    assert stored == {first.id: first.id, copy.id: first.id, other.id: other.id, late.id: late.id,
                      teaser.id: teaser.id}
    assert set(bands) == {first.id, copy.id, other.id, late.id}  # no bands for a teaser


def test_reassigning_an_article_replaces_its_bands(engine: Engine) -> None:
    with session_scope(engine) as session:
        first = _article(session, "https://wire.example/1", WIRE, T0)
        assign_cluster(session, first.id, WIRE, T0)
        assign_cluster(session, first.id, OTHER_STORY, T0)  # its page was re-extracted
        stored = set(session.scalars(select(StoryBand.band_hash).where(StoryBand.article_id == first.id)))
        assert stored == set(band_hashes(signature(OTHER_STORY)))
        copy = _article(session, "https://post.example/1", REPUBLISHED, T0)
        assert assign_cluster(session, copy.id, REPUBLISHED, T0) == copy.id


def test_similar_stories_do_not_chain_into_one_cluster(engine: Engine) -> None:
    """Each story resembles the one before it, but the last shares little with the first."""
    words = WIRE.split()
    drifting = [" ".join(words[i * 12:] + OTHER_STORY.split()[: i * 12]) for i in range(5)]
    with session_scope(engine) as session:
        ids = []
        for n, text in enumerate(drifting):
            article = _article(session, f"https://wire.example/{n}", text, T0 + timedelta(hours=n))
            ids.append(assign_cluster(session, article.id, text, article.published_at))
    assert similarity(signature(drifting[0]), signature(drifting[1])) >= 0.6
    assert similarity(signature(drifting[0]), signature(drifting[-1])) < 0.6
    assert ids[1] == ids[0] and ids[-1] != ids[0]


def test_arabic_copies_match_despite_diacritics_and_letter_forms() -> None:
    story = (
        "أعلنت وزارة الداخلية العراقية أن قوات الأمن اعتقلت خمسة عناصر من خلية تابعة لتنظيم الدولة "
        "الإسلامية في محافظة الأنبار بعد عملية رصد استمرت أسابيع، وضبطت بحوزتهم أسلحة وعبوات ناسفة "
        "كانت معدة لاستهداف نقاط التفتيش على الطريق الدولي، وقال المتحدث باسم الوزارة إن التحقيقات "
        "مستمرة لكشف بقية أفراد الخلية ومصادر تمويلها، وإن القوات الأمنية ستواصل ملاحقة فلول التنظيم "
        "في المناطق الصحراوية المحاذية للحدود مع سوريا"
    )
    voweled = story.replace("الدولة", "الدَّوْلَة").replace("أعلنت", "اعلنت").replace("الإسلامية", "الاسلامية")
    voweled = voweled.replace("العراقية", "العراقيـــة")
    assert similarity(signature(story), signature(voweled)) >= 0.8
