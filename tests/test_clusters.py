"""Story clusters: near-duplicate copies share a cluster; different stories never merge."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import Engine, select, update

from marsad.clusters import (
    MIN_WORDS,
    ClusterSettings,
    assign_cluster,
    band_hashes,
    containment,
    differing_facts,
    match_rank,
    same_facts,
    shingles_of,
    signature,
    similarity,
)
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


# Containment: shortened copies and extended versions ----------------------------------------------

FUEL_WIRE = (
    "A drone strike hit a convoy of fuel tankers on the road between Qamishli and Tal Tamr on "
    "Tuesday evening, killing three drivers and setting at least seven trucks on fire, according to "
    "local officials and a war monitor. The convoy had left the Rmelan oil fields in the afternoon "
    "and was heading west when the first vehicle was struck near the village of Abu Rasin, "
    "witnesses said. Firefighters from Tal Tamr needed more than four hours to bring the blaze under "
    "control, and the road remained closed overnight while crews towed away the burnt tankers. The "
    "Kurdish-led administration condemned the strike as an attack on the livelihood of the region "
    "and said fuel prices in local markets had risen by a fifth by Wednesday morning. No party has "
    "claimed responsibility. Turkey has carried out repeated drone strikes in northeast Syria "
    "against targets it links to the Kurdistan Workers' Party, which it considers a terrorist "
    "organisation, and the Turkish defence ministry did not respond to a request for comment. A "
    "spokesman for the administration said the convoy carried fuel for bakeries and hospitals in "
    "Hasakah province and that the drivers were civilians employed by a private transport company. "
    "Traders in Qamishli said queues had formed at petrol stations within hours of the news, and "
    "several stations closed early after running out of diesel. The administration said it would "
    "release part of its strategic reserve to keep bakeries running through the weekend, and asked "
    "residents not to hoard fuel."
)
# Another outlet runs only the opening of the wire story, under its own dateline and sign-off.
FUEL_SHORTENED = (
    "HASAKAH (Jazira Today) — " + FUEL_WIRE.split(" No party has claimed")[0]
    + " Follow Jazira Today for updates on this story."
)
# A different story on the same strike: same places and names, the wire's stock sentence on Turkey.
FUEL_OTHER = (
    "Families of the three drivers killed in Tuesday's strike near Abu Rasin buried them in Qamishli "
    "on Wednesday, as hundreds of mourners followed the coffins through the city. Relatives said "
    "the men had driven the Rmelan route for years. Turkey has carried out repeated drone strikes in "
    "northeast Syria against targets it links to the Kurdistan Workers' Party, which it considers a "
    "terrorist organisation. The Kurdish-led administration declared a day of mourning."
)

HOL_WIRE = (
    "Iraq brought back 640 of its citizens from the al-Hol camp in northeast Syria on Thursday, the "
    "largest group returned this year, the ministry of migration said. The families, most of them "
    "women and children, crossed at the Rabia border post in a convoy of buses escorted by security "
    "forces and were taken to the Jeddah 1 rehabilitation centre south of Mosul. There they will "
    "spend several months in psychological and religious programmes before being allowed to go "
    "home, officials said. Baghdad has repatriated more than 10,000 people from the camp since 2021, "
    "and the United Nations has urged other governments to follow its example."
)
# A local outlet runs the wire copy whole and adds its own reporting from the province.
HOL_LOCAL = (
    HOL_WIRE + " In Anbar, where many of the families come from, tribal leaders met on Thursday "
    "afternoon in Ramadi to discuss how the returnees would be received. Sheikh Khalid al-Dulaimi "
    "said the tribes would accept women and children who had no part in the group's crimes, but "
    "that men accused of killing members of the tribes would face the courts first. Local council "
    "members in Qaim said schools in the district lacked places for the children and asked the "
    "ministry of education for two prefabricated buildings before the start of the term. A woman in "
    "Heet whose sister is among the returnees said the family had waited six years for her and "
    "would travel to Jeddah 1 as soon as visits were allowed."
)

AR_WIRE = (
    "قالت مصادر أمنية عراقية إن انفجار عبوة ناسفة استهدف دورية للجيش على الطريق الرابط بين قضاء "
    "الطارمية وبغداد فجر الأحد أسفر عن مقتل جنديين وإصابة ثلاثة آخرين بجروح، نقلوا إلى مستشفى "
    "الكاظمية لتلقي العلاج. وأضافت المصادر أن قوة مشتركة من الجيش والحشد الشعبي طوقت المنطقة "
    "وبدأت عملية تفتيش واسعة في البساتين المحيطة بحثا عن المنفذين، فيما أغلقت الطريق أمام حركة "
    "المرور لساعات. ويعد قضاء الطارمية شمالي العاصمة من المناطق التي تشهد بين حين وآخر هجمات "
    "تنسب إلى خلايا تنظيم الدولة الإسلامية التي تستغل طبيعتها الزراعية الكثيفة للاختباء. وقال "
    "قائد عمليات بغداد في بيان إن القوات الأمنية اعتقلت مشتبها بهما في قرية قريبة من موقع "
    "الانفجار، وإن التحقيقات جارية لمعرفة الجهة التي تقف وراء الهجوم. وطالب نواب عن المنطقة "
    "الحكومة بنشر مزيد من كاميرات المراقبة على الطرق الزراعية وتعزيز الجهد الاستخباري، مؤكدين "
    "أن الأهالي يدفعون ثمن الخروقات المتكررة. ولم يعلن أي تنظيم مسؤوليته عن الهجوم حتى مساء "
    "الأحد، بينما شيع أهالي الجنديين جثمانيهما في مدينتي الحلة والديوانية. وكانت القوات الأمنية قد "
    "أعلنت الشهر الماضي تفكيك خلية في المنطقة نفسها كانت تخطط لاستهداف أبراج نقل الطاقة الكهربائية "
    "في أطراف العاصمة، وضبطت بحوزة أفرادها أسلحة خفيفة وأجهزة اتصال ومبالغ مالية، وأحالتهم إلى "
    "القضاء بموجب قانون مكافحة الإرهاب."
)
AR_SHORTENED = (
    "بغداد – وكالة الرافدين: " + AR_WIRE.split(" وقال قائد")[0] + " تابعونا لمزيد من التفاصيل."
)
AR_OTHER = (
    "شيع أهالي مدينة الحلة الأحد جثمان أحد الجنديين اللذين قتلا في انفجار عبوة ناسفة على الطريق "
    "الرابط بين قضاء الطارمية وبغداد، وسط حضور رسمي وعشائري واسع. وقال والد الجندي إن ابنه التحق "
    "بالجيش قبل أربع سنوات وكان يستعد للزواج الشهر المقبل. ويعد قضاء الطارمية شمالي العاصمة من "
    "المناطق التي تشهد بين حين وآخر هجمات تنسب إلى خلايا تنظيم الدولة الإسلامية."
)
BRIEF = (
    "Police in Kirkuk arrested two men on Monday who were carrying explosive belts at a checkpoint "
    "on the road to Hawija, the provincial police command said in a statement. The men had arrived "
    "in a taxi from the Zab area and tried to run when officers asked for their papers. Both were "
    "caught within minutes, and a bomb disposal team made the belts safe. The statement said the "
    "pair planned to attack a market in the city and that a third suspect was being sought."
)
# The first sentences of the brief, as a feed summary carries them: a text, but a teaser.
BRIEF_TEASER = " ".join(BRIEF.split()[:43])


def _shares_a_band(a: str, b: str) -> bool:
    return bool(set(band_hashes(signature(a))) & set(band_hashes(signature(b))))


def _rank(a: str, b: str) -> tuple[int, float] | None:
    sig_a, sig_b = signature(a), signature(b)
    return match_rank(sig_a, len(shingles_of(a)), sig_b, len(shingles_of(b)), ClusterSettings())


def test_containment_from_jaccard_and_sizes() -> None:
    assert containment(0.5, 100, 200) == pytest.approx(1.0)  # half the length, wholly inside
    assert containment(0.5, 200, 100) == pytest.approx(1.0)  # symmetric
    assert containment(0.5, 150, 150) == pytest.approx(2 / 3)  # equal lengths: no containment
    assert containment(0.0, 50, 500) == 0.0


def _signatures_agreeing_in(matches: int) -> tuple[np.ndarray, np.ndarray]:
    head = np.arange(128, dtype=np.uint32)
    other = head.copy()
    other[matches:] += 1000
    return other, head


@pytest.mark.parametrize(
    ("matches", "count", "head_count", "expected"),
    [
        (77, 100, 100, (1, 77 / 128)),  # J 0.60: a Jaccard match, whatever the sizes
        (59, 100, 220, (0, 1.0)),  # J 0.46, the shorter wholly inside: C 1.01, cut to 1
        (59, 220, 100, (0, 1.0)),  # the same, from the longer side
        (40, 100, 150, None),  # J 0.31 but C 0.60: shares too little of the shorter
        (3, 45, 1500, None),  # C 0.80 from three chance matches: below the J floor
        (45, 40, 100, (0, pytest.approx(0.910, abs=0.001))),  # J 0.35, C 0.91, MIN_WORDS shingles
        (45, 39, 100, None),  # the same with one shingle too few
        (59, 100, None, None),  # head clustered before counts were kept
    ],
)
def test_containment_rule(
    matches: int, count: int, head_count: int | None, expected: tuple[int, float] | None
) -> None:
    sig, head_sig = _signatures_agreeing_in(matches)
    assert match_rank(sig, count, head_sig, head_count, ClusterSettings()) == expected


@pytest.mark.parametrize(
    ("copy", "story"),
    [(FUEL_SHORTENED, FUEL_WIRE), (HOL_LOCAL, HOL_WIRE), (AR_SHORTENED, AR_WIRE)],
    ids=["first-half", "longer-version", "arabic-first-half"],
)
def test_copies_below_the_jaccard_threshold_match_by_containment(copy: str, story: str) -> None:
    assert similarity(signature(copy), signature(story)) < 0.6  # Jaccard alone would miss them
    rank = _rank(copy, story)
    assert rank is not None and rank[0] == 0 and rank[1] >= 0.8


@pytest.mark.parametrize(
    ("other", "story"),
    [
        (FUEL_OTHER, FUEL_WIRE),
        (FUEL_OTHER, FUEL_SHORTENED),
        (AR_OTHER, AR_WIRE),
        (AR_OTHER, AR_SHORTENED),
    ],
)
def test_other_stories_on_the_same_event_do_not_match_even_when_short(
    other: str, story: str
) -> None:
    # Same strike, same places and names, one sentence word for word; two thirds the length or less.
    assert len(shingles_of(other)) < len(shingles_of(story)) / 1.5
    assert _rank(other, story) is None


@pytest.mark.parametrize(
    ("first", "then", "other"),
    [
        (FUEL_WIRE, FUEL_SHORTENED, FUEL_OTHER),
        (HOL_WIRE, HOL_LOCAL, None),
        (AR_SHORTENED, AR_WIRE, AR_OTHER),
    ],
    ids=["republished-first-half", "wire-copy-with-local-paragraphs", "arabic-whole-after-half"],
)
def test_shortened_and_extended_copies_join_in_the_database(
    engine: Engine, first: str, then: str, other: str | None
) -> None:
    assert _shares_a_band(first, then)  # a candidate at all; the test is what decides
    with session_scope(engine) as session:
        head = _article(session, "https://wire.example/1", first, T0)
        copy = _article(session, "https://local.example/1", then, T0 + timedelta(hours=4))
        assert assign_cluster(session, head.id, first, head.published_at) == head.id
        assert assign_cluster(session, copy.id, then, copy.published_at) == head.id
        if other is not None:
            later = _article(session, "https://other.example/1", other, T0 + timedelta(hours=20))
            assert assign_cluster(session, later.id, other, later.published_at) == later.id
    with session_scope(engine) as session:
        counts = {a.id: a.shingle_count for a in session.scalars(select(Article))}
    assert counts[head.id] == len(shingles_of(first)) and counts[copy.id] == len(shingles_of(then))


def test_teasers_are_not_clustered_by_containment(engine: Engine) -> None:
    """A feed summary holding a brief's first sentences lies wholly inside the brief, but says
    too little to tell one story from another."""
    assert len(BRIEF_TEASER.split()) >= MIN_WORDS > len(shingles_of(BRIEF_TEASER))
    assert _shares_a_band(BRIEF, BRIEF_TEASER)
    # At the brief's length the teaser's J clears the floor: only its size keeps it out.
    assert similarity(signature(BRIEF), signature(BRIEF_TEASER)) >= 0.3
    too_short = " ".join(BRIEF.split()[: MIN_WORDS - 1])
    with session_scope(engine) as session:
        brief = _article(session, "https://police.example/1", BRIEF, T0)
        teaser = _article(session, "https://aggregator.example/1", BRIEF_TEASER, T0)
        shorter = _article(session, "https://aggregator.example/2", too_short, T0)
        results = [assign_cluster(session, a.id, a.text, T0) for a in (brief, teaser, shorter)]
    assert results == [brief.id, teaser.id, shorter.id]


def test_articles_without_a_shingle_count_are_compared_by_jaccard_only(engine: Engine) -> None:
    """Articles clustered before migration 0003 have no count: a half copy cannot join them,
    a whole copy still does."""
    whole_copy = "QAMISHLI (Levant Post) — " + FUEL_WIRE
    with session_scope(engine) as session:
        head = _article(session, "https://wire.example/1", FUEL_WIRE, T0)
        assign_cluster(session, head.id, FUEL_WIRE, T0)
        session.execute(update(Article).where(Article.id == head.id).values(shingle_count=None))
        half = _article(session, "https://local.example/1", FUEL_SHORTENED, T0)
        whole = _article(session, "https://post.example/1", whole_copy, T0)
        assert assign_cluster(session, half.id, FUEL_SHORTENED, T0) == half.id
        assert assign_cluster(session, whole.id, whole_copy, T0) == head.id


def test_a_jaccard_match_outranks_an_older_containment_match(engine: Engine) -> None:
    """The wire copy lies inside the older extended version (C ~0.97) and nearly equals another
    outlet's copy (J ~0.9): it joins the copy it equals."""
    near_copy = "MOSUL (Nineveh Now) — " + HOL_WIRE + " Our reporter was at the Rabia crossing."
    assert _rank(HOL_WIRE, HOL_LOCAL)[0] == 0 and _rank(HOL_WIRE, near_copy)[0] == 1
    # Ranked on one score, the older extended version would win.
    assert _rank(HOL_WIRE, near_copy)[1] < _rank(HOL_WIRE, HOL_LOCAL)[1]
    with session_scope(engine) as session:
        # Published six days apart: two clusters, and the wire copy, between them, is within
        # the window of both.
        extended = _article(session, "https://anbar.example/1", HOL_LOCAL, T0 - timedelta(days=3))
        copy = _article(session, "https://nineveh.example/1", near_copy, T0 + timedelta(days=3))
        wire = _article(session, "https://wire.example/1", HOL_WIRE, T0)
        results = [
            assign_cluster(session, a.id, a.text, a.published_at) for a in (extended, copy, wire)
        ]
    assert results == [extended.id, copy.id, copy.id]


def test_a_batch_is_clustered_as_if_its_articles_came_one_by_one(engine: Engine) -> None:
    """The ingest places a whole batch at once; each article must still see those before it, in
    the batch and in the database, and a re-stored one must keep the clusters it leads. Heads'
    texts, which tell templated releases apart, come from the database or from the batch."""
    from marsad.clusters import ClusterItem, assign_clusters

    words = WIRE.split()
    drifting = [" ".join(words[i * 12:] + OTHER_STORY.split()[: i * 12]) for i in range(5)]
    templated = [RAID_APRIL, RAID_MARCH_COPY, TOLL_MONDAY, TOLL_TUESDAY, TOLL_MONDAY_DATELINE]
    texts = [WIRE, REPUBLISHED, OTHER_STORY, *drifting, *templated, WIRE, "A teaser.", REPUBLISHED]
    times = [T0 + timedelta(hours=n) for n in range(len(texts))]
    times[-1] = T0 + timedelta(days=9)  # outside the window of every earlier copy

    def place(batched: bool, prefix: str, shift: timedelta) -> tuple[list[int | None], list[int]]:
        """``shift`` keeps the two runs' stories out of each other's window."""
        with session_scope(engine) as session:
            # Three stored before the batch: ones the batch copies, one re-stored within it.
            before = T0 + shift - timedelta(hours=1)
            stored = [_article(session, f"https://{prefix}.example/s{n}", text, before)
                      for n, text in enumerate((OTHER_STORY, WIRE, RAID_MARCH))]
            for article in stored:
                assign_cluster(session, article.id, article.text, article.published_at)
            batch = [_article(session, f"https://{prefix}.example/{n}", text, when + shift)
                     for n, (text, when) in enumerate(zip(texts, times, strict=True))]
            items = [ClusterItem(a.id, a.text, a.published_at) for a in batch]
            # Re-extracted mid-batch as another story: it leads the copy placed before it, so stays.
            items.insert(3, ClusterItem(stored[1].id, OTHER_STORY, T0 + shift))
            placed = assign_clusters(session, items) if batched else {}
            for item in items:  # each row's text is written with its cluster, as the ingest does
                row = update(Article).where(Article.id == item.article_id)
                if batched:
                    session.execute(row.values(text=item.text, **placed[item.article_id]))
                else:
                    session.execute(row.values(text=item.text))
                    assign_cluster(session, item.article_id, item.text, item.when)
            order = [*stored, *batch]
            session.expire_all()  # the updates went around the ORM: read the rows again
            clusters = {a.id: a.cluster_id for a in session.scalars(select(Article))}
            band_rows = select(StoryBand.article_id)
            bands = [len(session.scalars(band_rows.where(StoryBand.article_id == a.id)).all())
                     for a in order]
            # Clusters as positions in `order`, so the two runs' different ids compare.
            position = {a.id: n for n, a in enumerate(order)}
            return [position.get(clusters[a.id]) for a in order], bands

    one_by_one = place(False, "single", timedelta(0))
    batched = place(True, "batch", timedelta(days=60))
    assert batched == one_by_one
    clusters = one_by_one[0]
    assert len(set(clusters)) > 3  # several clusters, not one
    stored_march = 2
    april, copy, monday, tuesday, monday_copy = (3 + texts.index(text) for text in templated)
    assert clusters[april] == april and clusters[copy] == stored_march  # a head stored before
    assert clusters[tuesday] == tuesday and clusters[monday_copy] == monday  # heads in the batch


# Templated releases: the same boilerplate about another event -------------------------------------

RAID_MARCH = (
    "U.S. Central Command forces conducted a helicopter raid in Deir ez-Zor province, Syria, on "
    "March 12, resulting in the death of Abu Yusuf al-Ansari, a senior ISIS official responsible "
    "for planning attacks against Coalition and partner forces in the region. Two armed associates "
    "of the official were also killed during the operation. There are no indications that any "
    "civilians were harmed. \"This raid shows our enduring commitment to the defeat of ISIS,\" said "
    "General Daniel Harlow, commander of U.S. Central Command. \"We will continue to hunt down ISIS "
    "leaders wherever they hide.\" CENTCOM, alongside partner forces, remains committed to the "
    "enduring defeat of ISIS, which continues to threaten the region, our allies and the homeland."
)
RAID_APRIL = (
    RAID_MARCH.replace("Deir ez-Zor", "Hasakah").replace("March 12", "April 27")
    .replace("Abu Yusuf al-Ansari", "Khalid Hamad al-Jubouri")
)
# The March release as a news site runs it: dateline, a clause of its own, sign-off.
RAID_MARCH_COPY = (
    "WASHINGTON (Levant Wire) — "
    + RAID_MARCH.replace("There are no indications", "The command said there were no indications")
    + " Reporting by Sam Porter; editing by Nadia Karim."
)
# Lightly rewritten: another name for the group, a sentence put another way.
RAID_MARCH_REWRITE = (
    RAID_MARCH.replace("a senior ISIS official", "a senior Islamic State official").replace(
        "There are no indications that any civilians were harmed.",
        "No civilians appear to have been harmed, the command said.",
    )
)
# Another outlet's spelling of the place and the name.
RAID_MARCH_RESPELLED = RAID_MARCH.replace("Deir ez-Zor", "Deir Ezzor").replace("Yusuf", "Yousef")
# The April release with a local outlet's paragraph: it holds the March release's boilerplate.
RAID_APRIL_LOCAL = (
    RAID_APRIL + " Residents of Hasakah said helicopters circled over the village of Tal Baydar "
    "for about an hour before dawn and that troops searched two houses. A local council member "
    "said the man had moved to the area with his family two years ago and worked as a trader."
)

# The March release with a local outlet's paragraph.
RAID_MARCH_LOCAL = (
    RAID_MARCH + " In Deir ez-Zor, residents of the village of Hatla said they heard helicopters "
    "for about an hour before dawn, followed by gunfire and two explosions near a farmhouse on the "
    "bank of the Euphrates. A member of the local council said the man had arrived in the area last "
    "year with his family and presented himself as a livestock trader."
)

TOLL_MONDAY = (
    "The Health Ministry said on Monday that 52 people had been killed and 147 wounded across the "
    "territory over the previous 24 hours, bringing the death toll since the start of the war to "
    "43,391 and the number of wounded to 102,347. Many victims remain under the rubble and on the "
    "roads, where ambulance and civil defence crews cannot reach them, the ministry said in its "
    "daily statement. It added that hospitals in the north were running out of fuel and medicines, "
    "and appealed to international organisations to secure the entry of supplies and the "
    "evacuation of patients who need treatment abroad."
)
TOLL_TUESDAY = (
    TOLL_MONDAY.replace("Monday", "Tuesday").replace("52 people", "38 people")
    .replace("147 wounded", "96 wounded").replace("43,391", "43,429").replace("102,347", "102,443")
)
# Two outlets' copies of Monday's bulletin, each with its byline or dateline and its sign-off.
TOLL_MONDAY_BYLINE = (
    "By Rana Haddad, Gaza Desk. " + TOLL_MONDAY + " Additional reporting by Omar Saleh in Cairo."
)
TOLL_MONDAY_DATELINE = (
    "CAIRO, Nov 10 (Mashriq Press) - " + TOLL_MONDAY + " (Editing by Jonathan Weir)"
)

# The Security Media Cell's air-strike statement, two days, two places.
CELL_SUNDAY = (
    "أعلنت خلية الإعلام الأمني، يوم الأحد، أن طائرات القوة الجوية العراقية نفذت ضربات جوية "
    "استهدفت أوكارا لعصابات داعش الإرهابية في وادي الشاي ضمن محافظة كركوك، ما أسفر عن تدمير "
    "الأوكار وقتل من كان بداخلها. وقالت الخلية في بيان إنه بتوجيه من القائد العام للقوات المسلحة "
    "وبمعلومات استخبارية دقيقة من مديرية الاستخبارات العسكرية، نفذت طائرات إف 16 ضربات جوية "
    "دقيقة على الأهداف المحددة، وأكدت أن الضربات تأتي ضمن العمليات المستمرة لملاحقة بقايا "
    "عصابات داعش الإرهابية وتجفيف منابعها في المناطق الوعرة. وأضافت أن القوات الأمنية ستواصل "
    "عملياتها حتى القضاء على آخر فلول الإرهاب، داعية المواطنين إلى التعاون مع الأجهزة الأمنية "
    "والإبلاغ عن أي تحركات مشبوهة."
)
CELL_WEDNESDAY = (
    CELL_SUNDAY.replace("الأحد", "الأربعاء").replace("وادي الشاي", "جبال حمرين")
    .replace("كركوك", "ديالى")
)
# Sunday's statement on a news site: voweled, hamza dropped, its dateline and sign-off.
CELL_SUNDAY_COPY = (
    "بغداد - شبكة الرافدين: "
    + CELL_SUNDAY.replace("أعلنت", "اعلنت").replace("الإرهابية", "الارهابية")
    .replace("الأمني", "الأَمْنِيّ").replace("العراقية", "العراقيّة")
    + " تابعونا على منصاتنا."
)
# Lightly rewritten: other verbs, the day and the place kept.
CELL_SUNDAY_REWRITE = (
    CELL_SUNDAY.replace("نفذت ضربات جوية استهدفت", "شنت غارات استهدفت")
    .replace("داعية المواطنين", "ودعت المواطنين")
)

# A market report: the same sentences each morning, the day's rates.
DOLLAR_MONDAY = (
    "استقرت أسعار صرف الدولار الأمريكي مقابل الدينار العراقي في بورصة الكفاح المركزية في بغداد مع "
    "افتتاح التداولات صباح يوم الاثنين، وسجلت 148250 دينارا عراقيا مقابل 100 دولار أمريكي، وهي "
    "الأسعار ذاتها التي سجلتها البورصة عند الإغلاق. وبحسب جولة لمراسل الوكالة في الأسواق المحلية، "
    "فقد استقرت أسعار البيع والشراء في محال الصيرفة بالأسواق المحلية في العاصمة، إذ بلغ سعر البيع "
    "149250 دينارا عراقيا لكل 100 دولار أمريكي، فيما بلغ سعر الشراء 147250 دينارا. وفي أربيل عاصمة "
    "إقليم كردستان استقرت الأسعار أيضا، وقال صرافون إن الطلب على الدولار ما يزال ضعيفا بسبب تراجع "
    "حركة الاستيراد وانتظار التجار لقرارات البنك المركزي بشأن المنصة الإلكترونية للتحويلات."
)
DOLLAR_TUESDAY = (
    DOLLAR_MONDAY.replace("الاثنين", "الثلاثاء").replace("148250", "148600")
    .replace("149250", "149500").replace("147250", "147500")
)

TEMPLATED = [
    (RAID_MARCH, RAID_APRIL),
    (TOLL_MONDAY, TOLL_TUESDAY),
    (CELL_SUNDAY, CELL_WEDNESDAY),
    (DOLLAR_MONDAY, DOLLAR_TUESDAY),
    (RAID_MARCH, RAID_APRIL_LOCAL),
]
TEMPLATED_IDS = ["raid-release", "daily-toll", "arabic-statement", "arabic-exchange-rates",
                 "raid-release-with-local-paragraph"]


@pytest.mark.parametrize(("first", "then"), TEMPLATED, ids=TEMPLATED_IDS)
def test_templated_releases_about_other_events_do_not_join(
    engine: Engine, first: str, then: str
) -> None:
    # The signatures alone would join them: by Jaccard (~0.7), the last by containment.
    assert _shares_a_band(first, then) and _rank(then, first) is not None
    with session_scope(engine) as session:
        head = _article(session, "https://centcom.example/1", first, T0)
        later = _article(session, "https://centcom.example/2", then, T0 + timedelta(days=1))
        results = [assign_cluster(session, a.id, a.text, a.published_at) for a in (head, later)]
    assert results == [head.id, later.id]


@pytest.mark.parametrize(
    ("first", "then"),
    [
        (RAID_MARCH, RAID_MARCH_COPY),
        (RAID_MARCH_COPY, RAID_MARCH_REWRITE),
        (RAID_MARCH, RAID_MARCH_RESPELLED),
        (TOLL_MONDAY_BYLINE, TOLL_MONDAY_DATELINE),
        (CELL_SUNDAY, CELL_SUNDAY_COPY),
        (CELL_SUNDAY_COPY, CELL_SUNDAY_REWRITE),
    ],
    ids=["outlet-copy", "rewrite-after-copy", "respelled", "two-outlets", "arabic-copy",
         "arabic-rewrite"],
)
def test_copies_of_a_templated_release_still_join(engine: Engine, first: str, then: str) -> None:
    with session_scope(engine) as session:
        # The same template about another event, stored first, must not draw them in.
        other = _article(session, "https://wire.example/0", RAID_APRIL, T0 - timedelta(hours=1))
        head = _article(session, "https://wire.example/1", first, T0)
        copy = _article(session, "https://outlet.example/1", then, T0 + timedelta(hours=3))
        results = [assign_cluster(session, a.id, a.text, a.published_at)
                   for a in (other, head, copy)]
    assert results == [other.id, head.id, head.id]


def test_a_head_with_other_facts_is_passed_over_for_the_next_best(engine: Engine) -> None:
    """The March release resembles the April one most (J ~0.69) and the longer local version of
    itself less (J ~0.64): it joins the local version."""
    assert _rank(RAID_MARCH, RAID_APRIL) > _rank(RAID_MARCH, RAID_MARCH_LOCAL)
    with session_scope(engine) as session:
        april = _article(session, "https://centcom.example/2", RAID_APRIL, T0 - timedelta(days=1))
        local = _article(session, "https://euphrates.example/1", RAID_MARCH_LOCAL, T0)
        march = _article(session, "https://centcom.example/1", RAID_MARCH, T0 + timedelta(hours=2))
        results = [assign_cluster(session, a.id, a.text, a.published_at)
                   for a in (april, local, march)]
    assert results == [april.id, local.id, local.id]


def test_the_facts_that_tell_templated_releases_apart() -> None:
    """What differs is read where each text says something in place of the other; the dateline,
    the sign-off and the line only one text has do not count."""
    assert differing_facts(RAID_MARCH, RAID_APRIL) == (
        {"deir", "zor", "march", "12", "abu", "yusuf", "ansari"},
        {"hasakah", "april", "27", "khalid", "hamad", "jubouri"},
    )
    assert differing_facts(DOLLAR_MONDAY, DOLLAR_TUESDAY) == (
        {"الاثنين", "148250", "149250", "147250"},
        {"الثلاثاء", "148600", "149500", "147500"},
    )
    assert differing_facts(CELL_SUNDAY, CELL_WEDNESDAY) == (
        {"الاحد", "الشاي", "كركوك"}, {"الاربعاء", "حمرين", "ديالي"}
    )
    assert differing_facts(RAID_MARCH_COPY, RAID_MARCH_REWRITE) == (set(), {"islamic", "state"})
    assert differing_facts(RAID_MARCH, RAID_MARCH_RESPELLED) == (set(), set())  # Ezzor, Yousef
    assert differing_facts(TOLL_MONDAY_BYLINE, TOLL_MONDAY_DATELINE) == (set(), set())
    # Figures in another script or without separators are the same figures.
    eastern = DOLLAR_MONDAY.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    assert differing_facts(DOLLAR_MONDAY, eastern) == (set(), set())
    assert differing_facts(TOLL_MONDAY, TOLL_MONDAY.replace("43,391", "43391")) == (set(), set())
    # One figure corrected: one fact each way, still one story.
    corrected = TOLL_MONDAY.replace("147 wounded", "149 wounded")
    assert differing_facts(TOLL_MONDAY, corrected) == ({"147"}, {"149"})
    assert same_facts(TOLL_MONDAY, corrected) and not same_facts(TOLL_MONDAY, TOLL_TUESDAY)
    # Each outlet's "read also" line at one paragraph break: whole sentences, not a slot.
    cut = " No casualties were reported"
    with_link = WIRE.replace(cut, " Read also: Turkish drones hit PKK positions near Duhok." + cut)
    other_link = WIRE.replace(cut, " Related: SDF detains 12 ISIS suspects in Raqqa." + cut)
    assert differing_facts(with_link, other_link) == (set(), set())
    assert differing_facts(WIRE, with_link) == (set(), set())
