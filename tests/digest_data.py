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

ANBAR_AMBUSH = Sample(
    "anbar-ambush",
    "مقتل جنديين عراقيين بهجوم لخلايا «داعش» في صحراء الأنبار",
    "الرمادي - قُتل جنديان عراقيان وأصيب ثلاثة آخرون بجروح فجر الجمعة في هجوم شنّه مسلحون من تنظيم "
    "«داعش» على نقطة مراقبة للجيش في صحراء محافظة الأنبار غربي العراق، بحسب مصدر أمني. وقال المصدر "
    "إن المهاجمين استخدموا أسلحة خفيفة وقذائف هاون قبل أن ينسحبوا باتجاه وادي حوران، وإن القوات "
    "الأمنية بدأت عملية تمشيط واسعة.",
    "ar",
    frozenset({"isis"}),
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


def add_feed(
    session: Session, name: str, url: str, *, language: str = "en", source_type: str | None = None
) -> Feed:
    feed = Feed(url=url, name=name, language=language, source_type=source_type)
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


# --- a realistic morning, for the picture in the README ------------------------------------------

AL_HOL_SWEEP = Sample(
    "al-hol-sweep",
    "Al-Hol camp sweep uncovers tunnel, cash and ISIS recruitment material",
    "HASAKAH - Security forces in north-eastern Syria have finished a five-day search of al-Hol "
    "camp, seizing cash, mobile phones and Islamic State recruitment material and discovering a "
    "short tunnel dug beneath a tent in the camp's foreign section, camp officials said. The sweep "
    "began after a guard was stabbed last week. Officials say women loyal to the group enforce its "
    "rules inside the annex and smuggle money in through relatives.",
    "en",
    frozenset({"isis"}),
)

ERBIL_FINANCIER = Sample(
    "erbil-financier",
    "Kurdistan security forces arrest suspected ISIS financier in Erbil",
    "ERBIL - Asayish officers have detained a man accused of moving money to Islamic State cells in "
    "Syria's al-Hol camp and in Iraq's Hamrin mountains through a chain of currency exchange offices, "
    "the Kurdistan Region's security council said. Investigators seized ledgers, phones and about "
    "$120,000 in cash, and said further arrests were expected.",
    "en",
    frozenset({"isis"}),
)

COALITION_ADVISERS = Sample(
    "coalition-advisers",
    "Coalition advisers to stay in Erbil through 2027, Iraqi officials say",
    "BAGHDAD - Advisers of the U.S.-led coalition against ISIS will remain at the Harir air base and "
    "in Erbil until September 2027 under the transition agreed with Washington, two Iraqi officials "
    "said on Thursday. The Global Coalition to Defeat ISIS has already handed over its bases in "
    "Baghdad and Anbar to the Iraqi army.",
    "en",
    frozenset({"isis", "coalition"}),
)

BORDER_CENTRE = Sample(
    "border-centre",
    "Jordan and Syria agree to share border intelligence from a joint Amman centre",
    "AMMAN - The interior ministers of Jordan and Syria signed a protocol on Tuesday to exchange "
    "intelligence on their shared border through a joint coordination centre in Amman, targeting "
    "captagon smuggling networks. Liaison officers from both ministries will staff the centre, a "
    "joint statement said, in the closest security ties between the two neighbours in a decade.",
    "en",
    frozenset({"regional_cooperation"}),
)


def _history(n: int, topic: str) -> Sample:
    """An older story of ``topic``, different from today's so that it joins none of their clusters."""
    places = ["Tikrit", "Baiji", "Samarra", "Haditha", "Rawa", "Qaim", "Makhmour"]
    place = places[n % len(places)]
    if topic == "isis":
        return Sample(
            f"isis-history-{n}", f"Army repels ISIS attack on outpost near {place}",
            f"Soldiers repelled an attack by Islamic State fighters on an army outpost near {place} "
            f"overnight, officials said; report {n}.", "en", frozenset({"isis"}))
    if topic == "coalition":
        return Sample(
            f"coalition-history-{n}", f"Coalition aircraft support Iraqi operation near {place}",
            f"Aircraft of the U.S.-led coalition supported an Iraqi army operation against ISIS "
            f"remnants near {place}, the Joint Operations Command said; report {n}.",
            "en", frozenset({"isis", "coalition"}))
    return Sample(
        f"cooperation-history-{n}", f"Iraq and Jordan hold border security talks in {place}",
        f"The interior ministers of Iraq and Jordan signed a protocol to exchange intelligence and "
        f"hold joint patrols on the border, a joint statement from {place} said; report {n}.",
        "en", frozenset({"regional_cooperation"}))


def store_showcase(session: Session, now: datetime) -> None:
    """A morning an analyst might see: five outlets (one Arabic, one official, one wire), a month
    of earlier coverage, an ISIS spike today, one story carried by three outlets, one failing feed.
    ``now`` is the digest's cut-off; today's stories ran in the hours before it."""
    monitor = add_feed(session, "Levant Monitor", "https://levant-monitor.example/feed", source_type="independent")
    post = add_feed(session, "The Euphrates Post", "https://euphrates-post.example/rss", source_type="independent")
    jisr = add_feed(session, "Al-Jisr (الجسر)", "https://al-jisr.example/atom", language="ar", source_type="independent")
    gazette = add_feed(session, "Baghdad Official Gazette", "https://gazette.example/rss", source_type="official")
    wire = add_feed(session, "Regional Wire", "https://regional-wire.example/rss", source_type="wire")
    furat = add_feed(session, "Furat Voice", "https://furat-voice.example/feed", source_type="independent")
    furat.error_count, furat.last_status, furat.last_error = 4, "error", "HTTP 503"
    furat.last_success_at = now - timedelta(days=1, hours=3)

    # A month of coverage before yesterday (whose stories a first digest would carry): one ISIS
    # story most days, a few of the others.
    for day in range(2, 30):
        when = now - timedelta(days=day, hours=day % 5)
        if day % 7 != 3:
            add_article(session, (monitor, post)[day % 2], _history(day, "isis"), fetched=when, published=when)
        if day % 4 == 0:
            add_article(session, post, _history(day, "coalition"), fetched=when, published=when)
        if day % 5 == 0:
            add_article(session, monitor, _history(day, "regional_cooperation"), fetched=when, published=when)

    def today(feed: Feed, sample: Sample, hours: float, **kw: str) -> None:
        when = now - timedelta(hours=hours)
        add_article(session, feed, sample, fetched=when + timedelta(minutes=10), published=when, **kw)

    today(monitor, HAMRIN_RAID, 5.5)
    today(wire, HAMRIN_RAID_COPY, 5)
    today(post, Sample("hamrin-post", "Iraqi troops kill three ISIS fighters in Hamrin cave raid",
                       HAMRIN_RAID.text.replace("KIRKUK - ", "KIRKUK (Euphrates Post) - "), "en",
                       frozenset({"isis"})), 4.5)
    today(jisr, ANBAR_AMBUSH, 4)
    today(monitor, AL_HOL_SWEEP, 3)
    today(post, ERBIL_FINANCIER, 2)
    today(gazette, COALITION_ADVISERS, 1.5)
    today(monitor, CENTCOM_STRIKE, 6)
    today(jisr, AMMAN_BAGHDAD, 2.5)
    today(monitor, BORDER_CENTRE, 1)
