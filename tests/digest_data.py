"""Articles for the digest tests, stored as an ingest stores them: real tags, real clusters.

The texts are written for these tests; each says which topics the tagger should give it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from marsad.clusters import assign_cluster
from marsad.store import write_tags
from marsad.tagging import get_tagger
from models import Article, Feed


@dataclass(frozen=True)
class Sample:
    slug: str
    title: str
    text: str
    language: str
    topics: frozenset[str]


HAMRIN_RAID = Sample(
    "hamrin-raid",
    "Iraqi forces kill three Islamic State fighters in Hamrin hideout raid",
    "KIRKUK - Iraqi counter-terrorism troops killed three Islamic State fighters and detained a "
    "fourth in a dawn raid on a cave hideout in the Hamrin mountains, the Joint Operations Command "
    "said on Tuesday. The statement said the cell had planned attacks on checkpoints along the "
    "road between Kirkuk and Tikrit and had stored explosives, rifles and forged identity papers in "
    "the cave. Officers recovered a ledger listing payments to ISIS members in Diyala province. "
    "Security officials say remnants of the group still move between the mountains and the "
    "desert, using shepherds' paths to avoid army patrols.",
    "en",
    frozenset({"isis"}),
)

# A second outlet's copy of the same wire story: a different headline, the same body.
HAMRIN_RAID_COPY = Sample(
    "hamrin-raid-copy",
    "Three ISIS militants killed in Iraqi raid near Kirkuk",
    HAMRIN_RAID.text.replace("KIRKUK - ", "KIRKUK (Wire) - "),
    "en",
    frozenset({"isis"}),
)

CENTCOM_STRIKE = Sample(
    "centcom-strike",
    "CENTCOM says coalition strike killed ISIS planner in eastern Syria",
    "U.S. Central Command said on Wednesday that a coalition air strike near Deir ez-Zor killed a "
    "senior ISIS operations planner who had organised attacks on detention facilities holding "
    "the group's fighters. The strike was carried out in coordination with partner forces, the "
    "statement said, and no civilians were harmed. The Global Coalition to Defeat ISIS keeps "
    "about two thousand troops in Syria, whose mission is to prevent the group's resurgence.",
    "en",
    frozenset({"coalition", "isis"}),
)

AMMAN_BAGHDAD = Sample(
    "amman-baghdad",
    "الأردن والعراق يتفقان على تبادل المعلومات الاستخبارية لمكافحة داعش",
    "عمان - اتفق وزيرا الداخلية في الأردن والعراق خلال اجتماع عقد في عمان يوم الاثنين على "
    "تعزيز التعاون الأمني وتبادل المعلومات الاستخبارية بين أجهزة البلدين لمكافحة خلايا تنظيم "
    "داعش وضبط الحدود المشتركة ومنع تهريب الأسلحة والمخدرات. وقال بيان مشترك إن الجانبين "
    "قررا إنشاء غرفة عمليات مشتركة على الحدود وتسيير دوريات منسقة في الصحراء الغربية.",
    "ar",
    frozenset({"regional_cooperation", "isis"}),
)

WHEAT_PRICES = Sample(
    "wheat-prices",
    "Wheat prices ease in Damascus markets after a good harvest",
    "Bread and flour prices fell for the third week running in Damascus markets as farmers in "
    "Hasakah brought in the largest wheat harvest in five years, traders said. The trade ministry "
    "said it would raise the price it pays farmers next season.",
    "en",
    frozenset(),
)

HOSTILE = Sample(
    "hostile",
    '<script>alert("title")</script> ISIS cell <img src=x onerror=alert(1)> caught',
    'Police said an ISIS cell planned attacks. <script>document.location="http://127.0.0.9/"'
    '</script> The <b onmouseover="alert(2)">Islamic State</b> claimed the plot on its Amaq '
    "channel, officials said, and three suspects were detained.",
    "en",
    frozenset({"isis"}),
)


def add_feed(session: Session, name: str, url: str) -> Feed:
    feed = Feed(url=url, name=name, language="en")
    session.add(feed)
    session.flush()
    return feed


def add_article(
    session: Session,
    feed: Feed,
    sample: Sample,
    *,
    fetched: datetime,
    published: datetime | None = None,
    url: str | None = None,
) -> Article:
    """Store a sample as an ingest would: text, tags with evidence, places, cluster."""
    tagger = get_tagger()
    result = tagger.tag(sample.title, sample.text, sample.language)
    assert set(result.topic_names) == sample.topics, (sample.slug, result.topic_names)
    link = url or f"https://{feed.name.lower().replace(' ', '-')}.example/{sample.slug}"
    article = Article(
        canonical_url=link,
        url=link,
        guid=link,
        feed_id=feed.id,
        title=sample.title,
        text=sample.text,
        language=sample.language,
        published_at=published,
        discovered_at=fetched - timedelta(minutes=5),
        fetched_at=fetched,
        extraction_status="ok",
        places=list(result.places),
        actors=list(result.actors),
        tagged_with=tagger.version,
    )
    session.add(article)
    session.flush()
    write_tags(session, article.id, [t.to_dict() for t in result.topics], tagger.version, fetched)
    assign_cluster(session, article.id, sample.text, published or fetched)
    return article
