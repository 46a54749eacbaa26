"""Tagging: topics with evidence, places and actors, Arabic handling, taxonomy validation.

The article texts below are short, invented news items written for these tests.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path

import pytest

import marsad._match
import marsad.tagging
from marsad.errors import TaxonomyError
from marsad.tagging import (
    BUNDLED_TAXONOMY,
    RELEASED_FINGERPRINTS,
    TOPICS,
    Evidence,
    Tagger,
    TagResult,
    TopicTag,
    get_tagger,
    normalize_arabic,
)


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    return get_tagger()


def topics_of(result: TagResult) -> set[str]:
    return {t.topic for t in result.topics}


def evidence_of(result: TagResult, topic: str) -> tuple[Evidence, ...]:
    return next(t.evidence for t in result.topics if t.topic == topic)


def surfaces(result: TagResult, topic: str, title: str | None, text: str | None) -> list[str]:
    fields = {"title": title or "", "text": text or ""}
    return [fields[e.field][e.start : e.end] for e in evidence_of(result, topic)]


def assert_offsets_sound(result: TagResult, title: str | None, text: str | None) -> None:
    """Every evidence span is a whole word sequence of the field it names."""
    fields = {"title": title or "", "text": text or ""}
    for tag in result.topics:
        for ev in tag.evidence:
            value = fields[ev.field]
            assert 0 <= ev.start < ev.end <= len(value), ev
            span = value[ev.start : ev.end]
            assert span.strip() == span, (ev, span)
            assert ev.start == 0 or not value[ev.start - 1].isalnum(), (ev, span)


# --- isis -------------------------------------------------------------------------------------

ISIS_ATTACK_TITLE = "Gunmen kill four soldiers near Palmyra; ISIS claims ambush"
ISIS_ATTACK_TEXT = (
    "Four Syrian soldiers were killed on Tuesday when militants ambushed their patrol in the "
    "desert east of Palmyra, the defence ministry said. The Islamic State group claimed "
    "responsibility in a statement carried by its Amaq outlet, saying its fighters had "
    "detonated a roadside bomb before opening fire."
)

ECONOMY_TITLE = "Iraq's oil exports climb to a ten-year high"
ECONOMY_TEXT = (
    "Iraq exported an average of 3.6 million barrels per day last month, the oil ministry said on "
    "Sunday, the highest level in a decade. Revenue from crude sales funds most of the federal "
    "budget, and officials hope the windfall will ease pressure on the dinar, which has weakened "
    "against the dollar since the spring. Fields in the south, run by international companies "
    "under service contracts, accounted for most of the increase. Production in the north "
    "recovered more slowly after the war against ISIS ended in 2017, and a pipeline to the "
    "Turkish port of Ceyhan has been shut since an arbitration ruling. Economists warned that "
    "the budget remains exposed to swings in global prices: a drop of ten dollars a barrel "
    "would open a deficit of several billion dollars, one adviser to the finance ministry said, "
    "adding that the government had yet to diversify its revenue. Traders expect demand from "
    "Asian refiners to stay firm through the winter."
)


def test_isis_attack_report_is_isis(tagger):
    result = tagger.tag(ISIS_ATTACK_TITLE, ISIS_ATTACK_TEXT)
    assert topics_of(result) == {"isis"}
    tag = result.topics[0]
    assert 0.5 <= tag.score <= 1
    found = surfaces(result, "isis", ISIS_ATTACK_TITLE, ISIS_ATTACK_TEXT)
    assert "ISIS" in found and "Islamic State group" in found and "Amaq" in found
    assert_offsets_sound(result, ISIS_ATTACK_TITLE, ISIS_ATTACK_TEXT)


def test_passing_isis_mention_in_economy_article_is_not_isis(tagger):
    result = tagger.tag(ECONOMY_TITLE, ECONOMY_TEXT)
    assert "isis" not in topics_of(result)
    explained = {t["topic"]: t for t in tagger.explain(ECONOMY_TITLE, ECONOMY_TEXT)["topics"]}
    assert 0 < explained["isis"]["score"] < explained["isis"]["threshold"]


@pytest.mark.parametrize(
    ("text", "surface"),
    [
        (
            "The so-called Islamic State said its men had attacked the checkpoint.",
            "Islamic State",
        ),
        ("Iraqi forces said DAESH remnants attacked a village in Diyala overnight.", "DAESH"),
        ("ISIL fighters attacked an army post near Rutba on Friday.", "ISIL"),
        ("IS militants attacked a checkpoint in Deir ez-Zor, killing two guards.", "IS militants"),
        ("Da\u2019esh cells attacked shepherds in the Badia, locals said.", "Da\u2019esh"),
    ],
)
def test_english_variants_of_the_name(tagger, text, surface):
    result = tagger.tag(None, text)
    assert "isis" in topics_of(result)
    assert surface in surfaces(result, "isis", None, text)


def test_the_verb_is_and_a_generic_islamic_state_are_not_isis(tagger):
    text = (
        "This is group work, the teacher said. The movement once wanted an Islamic state in Idlib."
    )
    assert "isis" not in topics_of(tagger.tag(None, text))


# --- coalition --------------------------------------------------------------------------------


def test_coalition_strike_is_coalition(tagger):
    title = "US-led coalition strike kills senior ISIS commander in eastern Syria"
    text = (
        "A coalition airstrike killed a senior Islamic State commander near Deir ez-Zor on Sunday, "
        "CENTCOM said, adding that no civilians were harmed."
    )
    result = tagger.tag(title, text)
    assert {"isis", "coalition"} <= topics_of(result)
    found = surfaces(result, "coalition", title, text)
    assert "US-led coalition" in found and "coalition airstrike" in found and "CENTCOM" in found
    assert_offsets_sound(result, title, text)


def test_centcom_raid_is_coalition(tagger):
    text = (
        "U.S. Central Command said on Thursday that its forces, working with the SDF, carried out "
        "a helicopter raid in Hasakah province that captured an ISIS cell leader."
    )
    result = tagger.tag(None, text)
    assert "coalition" in topics_of(result)
    assert "U.S. Central Command" in surfaces(result, "coalition", None, text)


def test_centcom_without_isis_is_not_coalition(tagger):
    text = "CENTCOM said its warships intercepted two Houthi drones over the Red Sea on Monday."
    assert "coalition" not in topics_of(tagger.tag(None, text))


@pytest.mark.parametrize(
    ("title", "text"),
    [
        pytest.param(
            "Iraq's ruling coalition picks a new speaker",
            "The Shiite-led coalition government in Baghdad won a confidence vote on Tuesday. "
            "Leaders of the ruling coalition said rebuilding areas once held by ISIS would be a "
            "priority, alongside electricity and jobs.",
            id="coalition-government",
        ),
        pytest.param(
            "",
            "The Syrian National Coalition, the main opposition body abroad, condemned the ISIS "
            "bombing and urged the National Coalition's friends to help displaced families.",
            id="national-coalition",
        ),
        pytest.param(
            "Saudi-led coalition strikes Houthi sites",
            "The Saudi-led coalition in Yemen said on Monday its aircraft struck Houthi drone "
            "workshops near Marib. The coalition said the strikes were legitimate.",
            id="yemen",
        ),
        pytest.param(
            "SDF arrests ISIS suspects in Hasakah",
            "The Syrian Democratic Forces said their fighters arrested three ISIS suspects in a "
            "raid on a village south of Hasakah. The SDF did not say whether anyone else took part.",
            id="sdf-alone",
        ),
        pytest.param(
            "Erdogan's coalition partner criticises Baghdad",
            "The MHP, a coalition partner of Turkey's ruling party, said Iraq must do more against "
            "the PKK and ISIS.",
            id="political-coalition-partner",
        ),
        pytest.param(
            "",
            "المعارضة: الائتلاف الوطني السوري يدين تفجيرا تبناه داعش، فيما تشكلت حكومة ائتلافية "
            "جديدة في بغداد.",
            id="arabic-national-coalition",
        ),
    ],
)
def test_coalition_near_misses_are_not_coalition(tagger, title, text):
    assert "coalition" not in topics_of(tagger.tag(title, text))


# --- regional_cooperation ---------------------------------------------------------------------


def test_jordan_iraq_intelligence_sharing_is_regional_cooperation(tagger):
    title = "Jordan and Iraq agree to step up intelligence sharing"
    text = (
        "Jordanian and Iraqi interior ministers met in Amman on Monday and agreed to exchange "
        "intelligence on ISIS cells and drug smuggling along their shared border, a joint "
        "statement said. They also discussed joint patrols and border security."
    )
    result = tagger.tag(title, text)
    assert "regional_cooperation" in topics_of(result)
    found = surfaces(result, "regional_cooperation", title, text)
    assert "intelligence sharing" in found and "joint patrols" in found
    assert result.places[:3] == ("Jordan", "Iraq", "Amman")


def test_turkey_iraq_trade_deal_is_not_regional_cooperation(tagger):
    title = "Turkey and Iraq sign trade deal on Development Road"
    text = (
        "Turkish and Iraqi trade ministers signed a memorandum in Baghdad on Wednesday to expand "
        "bilateral trade, build a railway from Basra to the Turkish border and open a new border "
        "crossing. Officials said trade could reach twenty billion dollars."
    )
    result = tagger.tag(title, text)
    assert topics_of(result) == set()
    assert {"Turkey", "Iraq", "Baghdad", "Basra"} <= set(result.places)


def test_jordan_and_the_us_alone_are_not_regional_cooperation(tagger):
    title = "Jordan, US discuss security cooperation"
    text = (
        "Jordan's army chief and a visiting US general discussed security cooperation, "
        "intelligence sharing and joint exercises in Amman on Sunday, the Jordanian army said."
    )
    assert "regional_cooperation" not in topics_of(tagger.tag(title, text))


@pytest.mark.parametrize(
    ("title", "text"),
    [
        pytest.param(
            "Jordan tightens border security",
            "Jordan's army said it had tightened border security along the frontier with Syria "
            "after a rise in drug smuggling attempts.",
            id="one-state-acting-alone",
        ),
        pytest.param(
            "Israel strikes near Damascus",
            "Israeli jets struck targets near Damascus on Monday, Syrian state media said.",
            id="hostile-action",
        ),
    ],
)
def test_security_news_between_two_states_without_cooperation(tagger, title, text):
    assert "regional_cooperation" not in topics_of(tagger.tag(title, text))


def test_talks_on_border_security_between_two_states_is_regional_cooperation(tagger):
    title = "Iraqi and Syrian officials meet on border security"
    text = "Iraqi and Syrian officials met in Baghdad on Sunday to discuss border security."
    assert "regional_cooperation" in topics_of(tagger.tag(title, text))


def test_arabic_regional_cooperation(tagger):
    text = (
        "بحث وزيرا الداخلية الأردني والعراقي في عمّان تعزيز التعاون الأمني وتبادل المعلومات "
        "الاستخبارية لمواجهة خلايا داعش وتهريب المخدرات على الحدود المشتركة."
    )
    result = tagger.tag(None, text)
    assert "regional_cooperation" in topics_of(result)
    found = surfaces(result, "regional_cooperation", None, text)
    assert "وتبادل المعلومات الاستخبارية" in found and "التعاون الأمني" in found
    assert {"Jordan", "Iraq", "Amman"} <= set(result.places)


def test_arabic_trade_deal_is_not_regional_cooperation(tagger):
    text = (
        "وقّع وزيرا التجارة التركي والعراقي في بغداد اتفاقاً لتوسيع التبادل التجاري وإنشاء طريق "
        "التنمية وافتتاح منفذ حدودي جديد."
    )
    assert topics_of(tagger.tag(None, text)) == set()


# --- Arabic normalisation and offsets ---------------------------------------------------------


def test_normalize_arabic():
    assert normalize_arabic("أإآٱ") == "اااا"
    assert normalize_arabic("الدولة الإسلاميّة") == "الدوله الاسلاميه"
    assert normalize_arabic("مستشفى") == "مستشفي"
    assert normalize_arabic("داعـــش") == "داعش"
    assert normalize_arabic("هجومٍ") == "هجوم"
    assert normalize_arabic("ISIS 2025") == "ISIS 2025"


def test_normalize_arabic_maps_each_character_on_its_own():
    """The fold, done in a few passes for speed, is the character-by-character mapping: every
    Arabic-block character, marks in runs, Latin with curly quotes, all mixed."""
    from marsad.tagging import _ARABIC_DELETE, _ARABIC_LETTER_FOLD

    table = str.maketrans({**_ARABIC_LETTER_FOLD, **dict.fromkeys(_ARABIC_DELETE)})
    alphabet = [chr(c) for c in range(0x0600, 0x0700)] + list("abc ISIS’“”é\u200f\u00ad0129")
    alphabet += list(_ARABIC_LETTER_FOLD) * 5 + _ARABIC_DELETE * 3
    rng = random.Random(3)
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert normalize_arabic(text) == text.translate(table), text


def test_arabic_isis_with_prefixes_and_diacritics_keeps_original_offsets(tagger):
    title = "هجوم لداعش على حاجز في البادية"
    text = (
        "قُتل ثلاثة عناصر من الجيش السوري في هجومٍ شنّه مسلّحو تنظيم الدولة الإسلامية على حاجز "
        "قرب تدمر، وتبنّى التنظيم الهجوم عبر وكالة أعماق. وتتكرر المواجهات بين قسد وداعش."
    )
    result = tagger.tag(title, text)
    assert "isis" in topics_of(result)
    evidence = evidence_of(result, "isis")
    by_surface = {(title if e.field == "title" else text)[e.start : e.end]: e for e in evidence}
    assert by_surface["لداعش"].field == "title"
    assert by_surface["لداعش"].term == "لداعش" and by_surface["لداعش"].rule == "داعش*"
    assert by_surface["وداعش"].field == "text"
    assert by_surface["وتبنّى"].term == "وتبنّى"  # shadda kept in the span
    assert by_surface["وتبنّى"].rule == "تبنى"
    assert "هجومٍ" in by_surface  # tanween kept in the span
    assert "تنظيم الدولة" in by_surface or "تنظيم الدولة الإسلامية" in by_surface
    assert_offsets_sound(result, title, text)
    assert {"Syria", "Palmyra"} <= set(result.places)
    assert {"Syrian army", "SDF"} <= set(result.actors)


def test_arabic_coalition_with_attached_preposition(tagger):
    text = (
        "رحّبت دمشق بالتحالف الدولي في حربه على داعش، بعد أن نفّذت طائرات التحالف غارة جوية "
        "استهدفت قيادياً في التنظيم قرب دير الزور."
    )
    result = tagger.tag(None, text)
    assert {"isis", "coalition"} <= topics_of(result)
    evidence = evidence_of(result, "coalition")
    first = evidence[0]
    assert text[first.start : first.end] == first.term == "بالتحالف الدولي"
    assert first.rule == "التحالف الدولي"
    assert {"Damascus", "Deir ez-Zor"} <= set(result.places)


def test_hamza_variants_and_invisible_marks(tagger):
    # Written without hamza, with tatweel and a right-to-left mark: still found, offsets exact.
    text = "الاردن والعراق يبحثان التعاون الامني وتبادل المعلومات لمواجهة داعـــش\u200f في البادية."
    result = tagger.tag(None, text)
    assert "regional_cooperation" in topics_of(result)
    spans = {text[e.start : e.end] for t in result.topics for e in t.evidence}
    assert "التعاون الامني" in spans
    assert any(s.startswith("داعـــش") for s in spans)
    assert result.places[:2] == ("Jordan", "Iraq")


def test_article_required_terms_do_not_match_without_it(tagger):
    # "الهول" (al-Hol) is written with the article; "هول" alone is an ordinary word (horror).
    result = tagger.tag(None, "وصف الشهود هول الصدمة بعد الانفجار في السوق.")
    assert "al-Hol" not in result.places
    result = tagger.tag(None, "نقلت السلطات عائلات من مخيم الهول إلى العراق.")
    assert "al-Hol" in result.places


# --- fields, places, actors, output -----------------------------------------------------------


def test_evidence_field_title_versus_text(tagger):
    title = "ISIS claims attack on army post"
    text = "Militants of the Islamic State group attacked a post near Raqqa."
    result = tagger.tag(title, text)
    fields = {e.field for e in evidence_of(result, "isis")}
    assert fields == {"title", "text"}
    for ev in evidence_of(result, "isis"):
        source = title if ev.field == "title" else text
        assert source[ev.start : ev.end] in {
            "ISIS",
            "attack",
            "attacked",
            "Islamic State group",
            "Militants",
        }


def test_places_and_actors(tagger):
    title = "SDF and CENTCOM hold talks in Hasakah"
    text = (
        "Officials from the Syrian Ministry of Interior met Hayat Tahrir al-Sham veterans in "
        "Damascus, while the Iraqi army reinforced the border near al-Qaim facing Deir ez-Zor and "
        "the al-Hol camp. وفي دير الزور نفذت قسد حملة دهم."
    )
    result = tagger.tag(title, text)
    assert result.places == (
        "Hasakah",
        "Syria",
        "Damascus",
        "Iraq",
        "al-Qaim",
        "Deir ez-Zor",
        "al-Hol",
    )
    assert result.actors == (
        "SDF",
        "CENTCOM",
        "Syrian Ministry of Interior",
        "Hayat Tahrir al-Sham",
        "Iraqi army",
    )


def test_empty_input(tagger):
    result = tagger.tag(None, None)
    assert result == TagResult((), (), ())
    assert tagger.tag("", "").to_dict() == {"topics": [], "places": [], "actors": []}


def test_to_dict_shape_is_json(tagger):
    result = tagger.tag(ISIS_ATTACK_TITLE, ISIS_ATTACK_TEXT)
    data = json.loads(json.dumps(result.to_dict(), ensure_ascii=False))
    assert set(data) == {"topics", "places", "actors"}
    topic = data["topics"][0]
    assert set(topic) == {"topic", "score", "evidence"}
    assert topic["topic"] in TOPICS
    assert set(topic["evidence"][0]) == {"term", "field", "start", "end"}


def test_bundled_tagger_is_cached_and_versioned():
    assert get_tagger() is get_tagger()
    assert isinstance(get_tagger().version, str) and get_tagger().version
    assert set(get_tagger().thresholds) == set(TOPICS)


def test_tagging_is_deterministic(tagger):
    first = tagger.tag(ISIS_ATTACK_TITLE, ISIS_ATTACK_TEXT)
    assert tagger.tag(ISIS_ATTACK_TITLE, ISIS_ATTACK_TEXT) == first


# --- custom and malformed taxonomies ----------------------------------------------------------

MINIMAL = """\
version: "test-1"
contexts:
  near_isis: {topic_terms: isis, window: 100}
topics:
  isis:
    threshold: 0.3
    terms: [ISIS, داعش*]
  coalition:
    threshold: 0.3
    terms:
      - {term: coalition, weight: 1.0, needs: near_isis}
      - {term: CENTCOM, weight: 1.0, needs: near_isis}
      - {term: OIR, weight: 1.0, case: sensitive}
      - {term: Operation Inherent Resolve, weight: WEIGHT}
    exclude: [coalition government]
  regional_cooperation:
    threshold: 0.3
    terms: [joint operations center]
places:
  - {name: Syria, terms: [Syria]}
"""


def write(tmp_path: Path, text: str, name: str = "taxonomy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_custom_single_file_taxonomy(tmp_path):
    tagger = Tagger.from_path(write(tmp_path, MINIMAL.replace("WEIGHT", "2")))
    assert tagger.declared_version == "test-1"
    assert tagger.version == f"test-1+local.{tagger.fingerprint[:8]}"  # never released
    assert topics_of(tagger.tag(None, "ISIS fighters were hit by coalition jets in Syria.")) == {
        "isis",
        "coalition",
    }
    assert "coalition" not in topics_of(tagger.tag(None, "The coalition government met on ISIS."))
    assert "coalition" not in topics_of(tagger.tag(None, "The oir of the machine."))
    assert tagger.tag(None, "Syria").places == ("Syria",)


def test_fingerprint_follows_the_files(tmp_path):
    first = Tagger.from_path(write(tmp_path, MINIMAL.replace("WEIGHT", "2")))
    again = Tagger.from_path(write(tmp_path, MINIMAL.replace("WEIGHT", "2")))
    edited = Tagger.from_path(write(tmp_path, MINIMAL.replace("WEIGHT", "3")))
    assert first.fingerprint == again.fingerprint != edited.fingerprint
    assert first.declared_version == edited.declared_version == "test-1"
    assert first.version == again.version != edited.version


def test_custom_taxonomy_folder(tmp_path):
    write(tmp_path, MINIMAL.replace("WEIGHT", "2").split("places:")[0], "topics.yaml")
    write(tmp_path, "places:\n  - {name: Iraq, terms: [Iraq, عراق*]}\n", "places.yaml")
    write(tmp_path, "actors:\n  - {name: SDF, terms: [SDF, قسد]}\n", "actors.yaml")
    result = Tagger.from_path(tmp_path).tag(None, "قسد في العراقية ISIS")
    assert result.places == ("Iraq",) and result.actors == ("SDF",)


def test_context_lists_and_context_terms(tmp_path):
    text = MINIMAL.replace("WEIGHT", "2").replace(
        "  near_isis: {topic_terms: isis, window: 100}\n",
        "  near_isis: {topic_terms: isis, window: 100}\n"
        "  talks: {terms: [met, talks], window: 30}\n"
        "  two: {countries: [Syria, Iraq], min_countries: 2, window: 60}\n",
    )
    text = text.replace(
        "terms: [joint operations center]",
        "terms: [{term: border security, needs: [two, talks]}]",
    )
    text += "  - {name: Iraq, terms: [Iraq]}\n"
    tagger = Tagger.from_path(write(tmp_path, text))
    assert "regional_cooperation" in topics_of(
        tagger.tag(None, "Syria and Iraq met on border security.")
    )
    assert "regional_cooperation" not in topics_of(
        tagger.tag(None, "Syria tightened border security facing Iraq.")
    )
    assert "regional_cooperation" not in topics_of(
        tagger.tag(None, "Syria met on border security.")
    )


def test_malformed_weight_names_file_and_place(tmp_path):
    path = write(tmp_path, MINIMAL.replace("WEIGHT", "high"))
    with pytest.raises(TaxonomyError) as info:
        Tagger.from_path(path)
    message = str(info.value)
    assert str(path) in message
    assert "topics.coalition.terms[3]: weight must be a number" in message
    assert re.search(r"line \d+", message)
    assert info.value.reason == "taxonomy"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('version: "test-1"', "version: 1.5", "version"),
        (
            "threshold: 0.3\n    terms: [ISIS",
            "threshold: 3\n    terms: [ISIS",
            "topics.isis: threshold",
        ),
        ("  regional_cooperation:", "  regional:", "topics.regional: unknown topic"),
        (
            "needs: near_isis}\n      - {term: CENTCOM",
            "needs: nowhere}\n      - {term: CENTCOM",
            "nowhere",
        ),
        ("case: sensitive", "case: loud", "topics.coalition.terms[2]: case"),
        ("needs: near_isis}", "needs: [near_isis, nowhere]}", "needs 'nowhere'"),
        (
            "[ISIS, داعش*]",
            "[ISIS, {term: x, pattern: '(a|b)'}]",
            "topics.isis.terms[1]: pattern must not contain capturing groups",
        ),
        ("[ISIS, داعش*]", "[ISIS, ISIS]", "topics.isis.terms[1]: 'ISIS' is listed twice"),
        ("[ISIS, داعش*]", "[ISIS, 'IS*IS']", "only allowed at the end"),
        (
            "exclude: [coalition government]",
            "exclude: [{term: x, weight: 2}]",
            "unknown key 'weight'",
        ),
        (
            "{topic_terms: isis, window: 100}",
            "{topic_terms: isis}",
            "contexts.near_isis: window is missing",
        ),
        (
            "- {name: Syria, terms: [Syria]}",
            "- {name: Syria}",
            "places[0]: terms must be a non-empty list",
        ),
        ("terms: [ISIS, داعش*]", "terms: [ISIS, داعش*\n", "YAML syntax error"),
    ],
)
def test_malformed_taxonomies(tmp_path, old, new, expected):
    text = MINIMAL.replace("WEIGHT", "1")
    assert old in text
    with pytest.raises(TaxonomyError) as info:
        Tagger.from_path(write(tmp_path, text.replace(old, new)))
    assert expected in str(info.value)
    assert "taxonomy.yaml" in str(info.value)


def test_missing_taxonomy(tmp_path):
    with pytest.raises(TaxonomyError, match="not found"):
        Tagger.from_path(tmp_path / "nowhere")
    with pytest.raises(TaxonomyError, match="topics.yaml"):
        Tagger.from_path(tmp_path)  # a folder without topics.yaml


# --- rules from the analysts' definitions ------------------------------------------------------


def test_background_mention_is_not_isis(tagger):
    title = "Mosul book fair draws crowds"
    text = (
        "Mosul, once held by ISIS, hosted its first international book fair on Saturday. "
        "Publishers from Jordan and Lebanon attended, and organisers said the attacks on culture "
        "were over."
    )
    explained = {t["topic"]: t for t in tagger.explain(title, text)["topics"]}
    assert not explained["isis"]["given"]
    assert explained["isis"]["evidence"][0]["rule"] == "background mention"
    assert explained["isis"]["evidence"][0]["term"] == "once held by ISIS"


def test_isis_in_a_capitalised_title_is_isis(tagger):
    result = tagger.tag("ISLAMIC STATE CLAIMS AMBUSH NEAR PALMYRA", "Gunmen killed three soldiers.")
    assert "isis" in topics_of(result)
    assert "ISIS" in result.actors and "Palmyra" in result.places


def test_support_words_count_only_near_an_isis_term(tagger):
    title = "Houthis attack ship in Red Sea"
    text = (
        "Yemen's Houthis attacked a cargo ship with drones and missiles on Monday. "
        + "The crew was evacuated and the ship was towed to port. " * 12
        + "Analysts compared the group's tactics with those of ISIS a decade ago."
    )
    explained = {t["topic"]: t for t in tagger.explain(title, text)["topics"]}
    assert not explained["isis"]["given"]
    assert [e["term"] for e in explained["isis"]["evidence"]] == ["ISIS"]


def test_generic_islamic_state_and_caliphate_are_not_isis(tagger):
    text = (
        "Scholars debated whether an Islamic state should have a parliament. The Ottoman "
        "caliphate ended in 1924, and the idea of an islamic state has returned in debates."
    )
    assert "isis" not in topics_of(tagger.tag("Islamic law conference opens", text))
    # Beside a real ISIS term the same words count.
    text = "ISIS fighters in Raqqa still speak of the caliphate, the so-called islamic state."
    found = surfaces(tagger.tag(None, text), "isis", None, text)
    assert {"ISIS", "caliphate", "islamic state"} <= set(found)


def test_arabic_attached_pronouns(tagger):
    text = "قالت قوات الأمن إنها فككت وكراً لداعش واعتقلت عناصره، وإن خلاياه وخليته الأخيرة تنشط في البادية."
    result = tagger.tag(None, text)
    assert "isis" in topics_of(result)
    found = surfaces(result, "isis", None, text)
    assert {"لداعش", "خلاياه", "وخليته"} <= set(found)
    # Names take no pronoun: قطرها is "its diameter", not Qatar.
    assert tagger.tag(None, "قيس الطبيب قطرها بدقة.").places == ()


@pytest.mark.parametrize(
    ("title", "text"),
    [
        pytest.param(
            "Iraqi blocs count seats",
            "The Shiite-led coalition won 40 seats in the election, while rivals blamed ISIS "
            "attacks in Diyala for the low turnout.",
            id="coalition-beside-an-election",
        ),
        pytest.param(
            "",
            "The coalition said its jets struck AQAP and ISIS hideouts in Abyan, Yemen, on "
            "Tuesday, and that the Houthis had fired a missile at Marib.",
            id="coalition-beside-yemen",
        ),
        pytest.param(
            "",
            "The Islamic Military Counter Terrorism Coalition, led by Riyadh, met to discuss "
            "ISIS propaganda online.",
            id="imctc",
        ),
    ],
)
def test_more_coalition_near_misses(tagger, title, text):
    assert "coalition" not in topics_of(tagger.tag(title, text))


def test_coalition_troop_presence_is_coalition(tagger):
    title = "US troops to stay in Syria"
    text = (
        "US troops will remain at bases in north-east Syria, the Pentagon said on Friday, and "
        "coalition forces will keep advising local partners."
    )
    result = tagger.tag(title, text)
    assert "coalition" in topics_of(result)
    assert {"US forces"} <= set(result.actors)


def test_isis_in_the_coalitions_name_is_not_an_isis_mention(tagger):
    title = "Syria joins the Global Coalition to Defeat ISIS"
    text = "Syria became the 90th member of the anti-ISIS coalition on Monday."
    result = tagger.tag(title, text)
    assert topics_of(result) == {"coalition"}
    explained = {t["topic"]: t for t in tagger.explain(title, text)["topics"]}
    assert not explained["isis"]["given"]  # each "ISIS" counts at inner_weight only
    assert [e["term"] for e in explained["isis"]["evidence"]] == ["ISIS", "ISIS"]
    assert "Global Coalition against ISIS" in result.actors


def test_one_regional_state_with_the_us_about_a_border_is_not_regional_cooperation(tagger):
    title = "Jordan, US discuss security cooperation"
    text = (
        "Jordan's army chief and a visiting US general discussed security cooperation and "
        "intelligence sharing along the border with Syria, the army said."
    )
    result = tagger.tag(title, text)
    assert "regional_cooperation" not in topics_of(result)
    assert {"Jordan", "United States", "Syria"} <= set(result.places)


def test_two_regional_states_as_parties_is_regional_cooperation(tagger):
    title = "Turkish, Iraqi ministers discuss PKK"
    text = (
        "Turkish Foreign Minister Hakan Fidan met his Iraqi counterpart in Baghdad to discuss "
        "security cooperation against the PKK and a joint operations centre."
    )
    result = tagger.tag(title, text)
    assert "regional_cooperation" in topics_of(result)
    assert "joint operations centre" in surfaces(result, "regional_cooperation", title, text)


def test_trade_through_a_border_crossing_is_not_regional_cooperation(tagger):
    title = "Iraq, Jordan sign trade deal"
    text = (
        "Iraq and Jordan signed an agreement to expand trade through the Trebil border crossing "
        "and discussed customs procedures and electricity links."
    )
    result = tagger.tag(title, text)
    assert topics_of(result) == set()
    assert "Trebil crossing" in result.places


# --- places and actors: gazetteer --------------------------------------------------------------


def test_a_town_brings_its_country(tagger):
    result = tagger.tag("Blast in Qamishli", "A car bomb exploded in Qamishli and in Erbil.")
    assert result.places == ("Qamishli", "Syria", "Erbil", "Iraq")


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("Fighting near Deir al-Zour and Dayr az-Zawr continued.", "Deir ez-Zor"),
        ("Clashes in al-Bukamal overnight.", "Abu Kamal"),
        ("Protests in Sweida on Friday.", "Suwayda"),
        ("Troops entered Tadmur.", "Palmyra"),
        ("قصف على ديرالزور والبوكمال.", "Deir ez-Zor"),
        ("وصل وفد إلى الحسكة.", "Hasakah"),
        ("Erdoğan spoke in İdlib about Türkiye.", "Idlib"),
    ],
)
def test_place_spellings(tagger, text, place):
    assert place in tagger.tag(None, text).places


def test_ambiguous_common_words_are_not_places(tagger):
    assert tagger.tag(None, "the turkey dinner was served").places == ()
    # القائم is also "the existing": only the town's unambiguous forms count.
    assert tagger.tag(None, "حافظ الاتفاق على الوضع القائم.").places == ()
    assert "al-Qaim" in tagger.tag(None, "اشتباكات قرب قضاء القائم.").places


def test_actor_names_bring_their_places(tagger):
    text = (
        "The Iraqi Counter-Terrorism Service and the Syrian Democratic Forces met Turkey's MIT "
        "officials; وأعلنت قسد والحشد الشعبي وكتائب حزب الله."
    )
    result = tagger.tag(None, text)
    assert result.actors == (
        "Iraqi Counter-Terrorism Service",
        "SDF",
        "Turkish MIT",
        "Popular Mobilization Forces",
        "Kataib Hezbollah",
    )
    assert {"Iraq", "Syria", "Turkey"} <= set(result.places)


# --- matching details --------------------------------------------------------------------------


def test_soft_hyphen_and_mixed_scripts_keep_offsets(tagger):
    title = "تقرير: Hezbol\u00adlah و ISIS في سوريا"
    text = "قالت مصادر إن عناصر من ISIS هاجموا حاجزاً لقسد، وإن Hezbollah نفى. ISIS cells in Raqqa."
    result = tagger.tag(title, text)
    assert "Hezbollah" in result.actors and "SDF" in result.actors
    assert_offsets_sound(result, title, text)
    assert tagger.tag(title, text, language="ar") == result
    assert tagger.tag(title, text, language="en") == result


def test_evidence_is_limited_per_term(tagger):
    text = "ISIS attacked a checkpoint. " * 10
    evidence = evidence_of(tagger.tag(None, text), "isis")
    assert [e.term for e in evidence].count("ISIS") == 2


# --- taxonomy features -------------------------------------------------------------------------

FEATURES = """\
version: "t-2"
aliases:
  isis: [ISIS, Daesh]
contexts:
  near_isis: {topic_terms: isis, window: 100}
  yemen: {terms: [Yemen], window: 50}
  two: {countries: [Syria, Iraq], min_countries: 2, window: 100, not_after: [border with]}
  talks: {terms: [met], window: 100}
  either: {any_of: [two, talks]}
topics:
  isis:
    threshold: 0.3
    terms: ["{isis}", {term: "held by {isis}", weight: 0.1}]
  coalition:
    threshold: 0.3
    terms: [{term: coalition, needs: near_isis, unless: yemen}]
  regional_cooperation:
    threshold: 0.3
    terms: [{term: security cooperation, needs: two}, {term: joint patrols, needs: either}]
places:
  - {name: Syria, terms: [Syria]}
  - {name: Iraq, terms: [Iraq]}
  - {name: Raqqa, country: Syria, terms: [Raqqa]}
"""


def test_aliases_unless_any_of_and_locations(tmp_path):
    tagger = Tagger.from_path(write(tmp_path, FEATURES))
    assert "isis" in topics_of(tagger.tag(None, "Daesh fighters"))
    assert "isis" not in topics_of(tagger.tag(None, "a town once held by Daesh"))
    assert "coalition" in topics_of(tagger.tag(None, "The coalition hit ISIS."))
    assert "coalition" not in topics_of(tagger.tag(None, "The coalition hit ISIS in Yemen."))
    regional = "regional_cooperation"
    assert regional in topics_of(tagger.tag(None, "Iraq and Syria: security cooperation."))
    assert regional in topics_of(tagger.tag(None, "Iraq and Raqqa: security cooperation."))
    assert regional not in topics_of(
        tagger.tag(None, "Iraq discussed security cooperation on its border with Syria.")
    )
    assert regional in topics_of(tagger.tag(None, "They met and agreed on joint patrols."))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('"{isis}"', '"{isil}"', "{isil} is not an alias"),
        ('"{isis}"', '"{isis"', "braces are only used around an alias name"),
        ("  isis: [ISIS, Daesh]", "  isis: []", "aliases.isis: an alias must be a non-empty list"),
        ("any_of: [two, talks]", "any_of: [two, nowhere]", "'nowhere' is not another context"),
        ("unless: yemen", "unless: sudan", "unless 'sudan', which is not defined"),
        ("not_after: [border with]", "not_after: border", "not_after must be a list of words"),
    ],
)
def test_malformed_features(tmp_path, old, new, expected):
    assert old in FEATURES
    with pytest.raises(TaxonomyError) as info:
        Tagger.from_path(write(tmp_path, FEATURES.replace(old, new)))
    assert expected in str(info.value)


# --- longer articles, written for these tests ----------------------------------------------------

IRAQ_POLITICS = (
    "BAGHDAD — Iraqi Prime Minister Mohammed Shia al-Sudani met leaders of the two main Kurdish "
    "parties in Baghdad on Sunday as his coalition seeks partners for a second term, officials "
    "said. The coalition, which emerged as the largest list in last month's vote, needs the "
    "support of Kurdish and Sunni lawmakers to secure a majority in the 329-seat parliament. "
    "Talks have stalled over the budget share of the Kurdistan Region and over oil exports "
    "through Turkey. A senior member of the coalition said negotiations would continue this "
    "week. Iraq has enjoyed relative stability since the defeat of ISIS in 2017, and Sudani has "
    "campaigned on reconstruction, electricity and jobs. Analysts said the coalition would "
    "struggle to hold together if talks with the Kurds failed."
)

SYRIA_TURKEY_TRADE = (
    "ANKARA — Turkish and Syrian officials agreed on Monday to reopen a second border crossing "
    "for commercial traffic and to set up a committee on water sharing from the Euphrates, the "
    "Turkish trade ministry said. The agreement follows months of talks on trade, electricity "
    "exports and the return of refugees. Officials said trade could double to $4 billion a year, "
    "and the two sides also discussed investment in Syrian ports. Relations between the "
    "neighbours have thawed since the fall of Bashar al-Assad. Turkey still keeps troops in "
    "northern Syria, where it fought ISIS and Kurdish militants in several cross-border "
    "operations. The ministers will meet again in Damascus next month."
)

GAZA_MEDIATION = (
    "CAIRO — Egypt and Qatar are coordinating efforts to broker a new ceasefire in Gaza, officials "
    "said, as Israeli military operations continued in the south of the territory. Egypt's "
    "intelligence chief met Qatari mediators in Cairo to discuss a hostage deal and humanitarian "
    "aid. Israel's army said it struck militants in Khan Younis."
)


@pytest.mark.parametrize(
    ("title", "text"),
    [
        pytest.param("Sudani's bloc courts Kurdish parties", IRAQ_POLITICS, id="iraqi-politics"),
        pytest.param("Turkey, Syria reopen trade crossing", SYRIA_TURKEY_TRADE, id="trade"),
        pytest.param("Egypt and Qatar coordinate on ceasefire push", GAZA_MEDIATION, id="gaza"),
    ],
)
def test_longer_articles_about_something_else_get_no_topic(tagger, title, text):
    assert topics_of(tagger.tag(title, text)) == set()


def test_us_strikes_on_iran_backed_militias_are_not_coalition(tagger):
    title = "US strikes Iran-backed militia after drone attack on base"
    text = (
        "CENTCOM said US forces struck two sites used by Kataib Hezbollah near al-Qaim in "
        "western Iraq, in response to a drone attack on a US base in Syria. US troops were "
        "deployed to Iraq and Syria to fight ISIS, and militias have attacked them repeatedly."
    )
    assert "coalition" not in topics_of(tagger.tag(title, text))


def test_a_bloc_counts_as_its_member_states(tagger):
    title = "Gulf interior ministers back shared watch list"
    text = (
        "Interior ministers of the Gulf Cooperation Council agreed in Riyadh to build a shared "
        "database of wanted terrorism suspects, the council said."
    )
    result = tagger.tag(title, text)
    assert "regional_cooperation" in topics_of(result)
    assert result.places[:1] == ("Gulf Cooperation Council",)


def test_arabic_definite_and_accusative_forms_of_a_term(tagger):
    # The taxonomy lists اتفاقية أمنية and اتفاق أمني; their agreeing forms match too.
    for text in (
        "بحث الأردن والعراق تفعيل الاتفاقية الأمنية الموقعة بين البلدين.",
        "وقع الأردن والعراق اتفاقا أمنيا جديدا لمكافحة التهريب.",
    ):
        assert "regional_cooperation" in topics_of(tagger.tag(None, text)), text


def test_bloc_members_must_be_countries(tmp_path):
    text = (
        MINIMAL.replace("WEIGHT", "1") + "  - {name: GCC, members: [Syria, Narnia], terms: [GCC]}\n"
    )
    with pytest.raises(TaxonomyError, match="member 'Narnia' is not a country"):
        Tagger.from_path(write(tmp_path, text))


# --- background mentions and short reports ----------------------------------------------------

OLIVE_TITLE = "Bashiqa olive harvest"
OLIVE = (
    "Farmers around Bashiqa began picking olives this week, and growers said the crop looked "
    "like the best in years after a wet spring. In Bashiqa, where Islamic State militants cut "
    "down and burned thousands of trees and killed farmers who refused to leave in 2014, "
    "co-operatives have replanted more than forty thousand saplings with help from an "
    "agricultural charity. The local press that presses oil for the villages reopened in 2021 "
    "and now runs two shifts. Traders in Mosul pay about four dollars a litre, a price that "
    "growers say barely covers the cost of hired pickers and diesel for the pumps. The "
    "agriculture directorate said it would buy surplus oil for school canteens if prices fell "
    "further, and that a new cold store would open before the next season."
)
OLIVE_MORE = (
    " Younger growers have started selling soap and pickled olives online, shipping to Erbil "
    "and Baghdad by bus. One co-operative employs twelve women who sort and bottle the oil, "
    "and its manager said orders had doubled since the summer. Agronomists from the university "
    "in Duhok are testing drip irrigation on three plots to see whether the trees can cope "
    "with hotter summers; the first results will be published next year. The provincial "
    "council has asked the ministry to repair the road to the press, which floods every "
    "winter and cuts the villages off for days."
)


@pytest.mark.parametrize("paragraphs", [0, 1, 3], ids=["750-chars", "1400-chars", "2800-chars"])
def test_a_dated_background_mention_is_not_isis(tagger, paragraphs):
    """One ISIS mention in a sentence dated in the past ("where ... in 2014"), with its own
    support words (militants, killed), in an article about something else."""
    text = OLIVE + OLIVE_MORE * paragraphs
    explained = {t["topic"]: t for t in tagger.explain(OLIVE_TITLE, text)["topics"]}
    assert not explained["isis"]["given"]
    # The support words of that sentence do not count: the mention stands alone.
    assert [e["term"] for e in explained["isis"]["evidence"]] == ["Islamic State"]


def test_a_background_mention_counts_when_the_title_is_about_isis(tagger):
    # The same text under a title naming the group, or speaking of what it did.
    for title in ("Groves burned by ISIS bloom again", "Olive farmers killed in 2014 mourned"):
        assert "isis" in topics_of(tagger.tag(title, OLIVE)), title


CELL_TRIAL_TITLE = "Court jails eleven members of a bomb-making cell"
CELL_TRIAL = (
    "The state security court handed down terms of between five and fifteen years on Wednesday, "
    "and acquitted one defendant for lack of evidence. Judges heard from forty witnesses over "
    "six months, among them explosives experts and the officers who searched a metal workshop "
    "on the edge of the capital, where drones and unfinished rockets were found. Defence "
    "lawyers said they would appeal, arguing that confessions had been taken under pressure, "
    "which the prosecution denied. A government spokesman said the law applied to everyone and "
    "that the services would follow any activity aimed at the country's stability, whoever was "
    "behind it. The verdict comes weeks after parliament debated a new law on associations."
)
CASTLE_ATTACK = "The country's deadliest attack, claimed by ISIS in 2016, killed ten people at a castle."


def test_a_title_speaking_of_the_topic_lifts_the_background_rule_only_for_the_lede(tagger):
    """A title with the topic's words ("cell") makes a dated mention in the lede the story's own;
    the same mention in the article's last paragraph stays background."""
    assert "isis" in topics_of(tagger.tag(CELL_TRIAL_TITLE, CASTLE_ATTACK + " " + CELL_TRIAL))
    assert len(CELL_TRIAL) > 600  # past the lede
    assert "isis" not in topics_of(tagger.tag(CELL_TRIAL_TITLE, CELL_TRIAL + " " + CASTLE_ATTACK))


BOOK_FAIR = (
    "Crowds filled the old souk of Mosul on Friday for the first book fair held in the city in "
    "years, as publishers from Baghdad, Erbil and Amman set up stalls along the restored "
    "arcades. Organisers said more than forty thousand titles were on sale, from children's "
    "stories to engineering manuals, and that students could buy them at half price. "
    "Shopkeepers said the crowds were the largest since the market reopened."
)


@pytest.mark.parametrize(
    ("title", "given"),
    [
        ("Ten years after ISIS burned its library, Mosul holds a book fair", False),
        ("A decade on from the ISIS years, Mosul holds a book fair", False),
        ("بعد عقد على سيطرة داعش على المدينة، معرض للكتاب في الموصل", False),
        ("ISIS burned its library; now Mosul holds a book fair", True),
    ],
)
def test_a_title_naming_the_topic_in_retrospect_is_a_background_mention(tagger, title, given):
    """A title that looks back ("ten years after") weighs what one background mention weighs,
    not a title's weight; without the words of retrospect the title makes the article about it."""
    assert ("isis" in topics_of(tagger.tag(title, BOOK_FAIR))) is given


def test_a_title_in_retrospect_and_one_background_sentence_do_not_make_the_topic(tagger):
    anniversary = "The fair opened on the anniversary of the day ISIS burned the library in 2015."
    title = "Ten years after ISIS burned its library, Mosul holds a book fair"
    assert "isis" not in topics_of(tagger.tag(title, BOOK_FAIR + " " + anniversary))


@pytest.mark.parametrize(
    "text",
    [
        "Since ISIS's defeat in Iraq, farmers in Sinjar have replanted their fields and expect "
        "a large wheat harvest this year.",
        "After the fall of ISIS, the old market in Raqqa was rebuilt and now sells vegetables "
        "and clothes again.",
        "The bridge, which Islamic State fighters blew up when they were driven out of the city "
        "in 2017, reopened to traffic on Sunday.",
        "Years ago ISIS gunmen attacked the village; today its school has three hundred pupils.",
        "عادت الدراسة إلى مدرسة في سنجار لأول مرة منذ هزيمة داعش، بعد أن أعيد بناء صفوفها.",
        "افتتح المحافظ الجسر الذي فجره مسلحو داعش إبان سيطرة داعش على المدينة عام 2014.",
        "افتتح المحافظ الجسر الذي فجره مسلحو تنظيم الدولة عام ٢٠١٦، وقال إنه سيخفف الزحام.",
        "وقال المزارعون إن عناصر داعش أحرقوا الحقول آنذاك، لكن المحصول هذا العام وفير.",
    ],
)
def test_single_background_mentions_are_not_isis(tagger, text):
    assert "isis" not in topics_of(tagger.tag("", text))


@pytest.mark.parametrize(
    "text",
    [
        # The three short reports of the audit, and more of the kind.
        "هاجم مسلحو داعش حاجزا للجيش في البادية",
        "اعتقلت القوات العراقية عناصر من تنظيم الدولة في الأنبار",
        "Iraqi forces detained two ISIS members in Kirkuk",
        "Iraqi forces detained two ISIS members in Kirkuk on March 3, 2025.",
        "Iraqi forces detained two ISIS members in Kirkuk on 3 March 2025.",
        "Police in Salahuddin arrested a suspected Islamic State member accused of planting bombs.",
        "Kurdish security forces detained three Daesh suspects at a checkpoint near Makhmour.",
        "Gunmen from ISIS stormed a village near Khanaqin overnight, local officials said.",
        "ألقت القوات الأمنية القبض على ثلاثة عناصر من تنظيم الدولة في قضاء الحويجة.",
        "قتل جنديان في هجمات شنها مسلحون من داعش على مواقع للجيش شرق حمص.",
        "أحبطت قوة أمنية مخططا لداعش كان يستهدف زوارا في كربلاء.",
    ],
)
def test_short_reports_with_one_isis_mention_are_isis(tagger, text):
    assert "isis" in topics_of(tagger.tag("", text)), tagger.explain("", text)["topics"][0]


def test_a_later_year_is_not_the_past(tagger):
    # past_dated counts years up to its `until`: later ones are plans or the news itself.
    text = "ISIS gunmen attacked villages near Rutba, and the army vowed to clear them by 2027."
    assert "isis" in topics_of(tagger.tag("", text))
    assert "isis" not in topics_of(tagger.tag("", text.replace("by 2027", "as in 2016")))


def test_a_background_sentence_beside_current_news_is_isis(tagger):
    text = (
        "ISIS gunmen attacked an army post near Tuz Khurmatu on Tuesday, killing two soldiers. "
        "The group once held large parts of the province, until it was driven out in 2017."
    )
    assert "isis" in topics_of(tagger.tag("", text))


def test_a_date_is_not_the_past_but_a_year_is(tmp_path):
    """The sentence context feature on its own: a year counts, a dated report does not."""
    taxonomy = write(
        tmp_path,
        MINIMAL.replace("WEIGHT", "1").replace(
            "  near_isis: {topic_terms: isis, window: 100}\n",
            "  near_isis: {topic_terms: isis, window: 100}\n"
            "  past: {terms: [at the time], years: true, months: [March, آذار],\n"
            "         window: sentence}\n",
        ).replace("    terms: [ISIS, داعش*]", "    terms: [{term: ISIS, unless: past}, داعش*]"),
    )
    tagger = Tagger.from_path(taxonomy)
    given = {
        "ISIS attacked the town. Later, in 2014, it was rebuilt.": True,  # another sentence
        "ISIS attacked the town in 2014.": False,
        "ISIS attacked the town in March 2014.": False,
        "ISIS, at the time the town's rulers, fled.": False,
        "ISIS attacked the town on March 3, 2025.": True,
        "ISIS attacked the town on 3 March 2025.": True,
        "ISIS attacked 2024-05-03, at 20:19 or in 12019 or with 2000s.": True,
        "قال إن ISIS هاجم البلدة في 3 آذار 2025.": True,
        "قال إن ISIS هاجم البلدة عام ٢٠١٤.": False,
        "قال إن ISIS هاجم البلدة و2014 شهد ذلك.": False,
    }
    for text, expected in given.items():
        assert ("isis" in topics_of(tagger.tag(None, text))) is expected, text


# --- evidence and versions -----------------------------------------------------------------------


def test_evidence_term_is_the_text_matched_and_rule_the_entry(tagger):
    title = "Iraqi forces raid ISIS hideout"
    text = "Iraqi troops arrested three suspects at an ISIS hideout near Kirkuk, و قتل عناصر لداعش."
    result = tagger.tag(title, text)
    fields = {"title": title, "text": text}
    for tag in result.topics:
        for e in tag.evidence:
            assert e.term == fields[e.field][e.start : e.end]
            assert e.to_dict() == {"term": e.term, "field": e.field, "start": e.start, "end": e.end}
    explained = {t["topic"]: t for t in tagger.explain(title, text)["topics"]}
    rules = {e["term"]: e["rule"] for e in explained["isis"]["evidence"]}
    assert rules["hideout"] == rules["arrested"] == "raid"
    assert rules["لداعش"] == "داعش*"


def test_the_bundled_version_is_its_release():
    """Changing the bundled taxonomy means bumping its version and pinning the new fingerprint
    in RELEASED_FINGERPRINTS (marsad/tagging.py), so every stored version names one rule set."""
    tagger = Tagger.from_path(None)
    assert RELEASED_FINGERPRINTS.get(tagger.declared_version) == tagger.fingerprint
    assert tagger.version == tagger.declared_version == get_tagger().version


def test_an_edited_copy_of_the_taxonomy_gets_its_own_version(tmp_path):
    same, edited = tmp_path / "same", tmp_path / "edited"
    for folder in (same, edited):
        folder.mkdir()
        for file in BUNDLED_TAXONOMY.glob("*.yaml"):
            (folder / file.name).write_text(file.read_text(encoding="utf-8"), encoding="utf-8")
    topics = edited / "topics.yaml"
    text = topics.read_text(encoding="utf-8")
    assert "    threshold: 0.45\n" in text
    topics.write_text(text.replace("    threshold: 0.45\n", "    threshold: 0.5\n", 1), "utf-8")
    # Comments and layout are not rules: the same rules are the release.
    (same / "topics.yaml").write_text("# An analyst's note.\n\n" + text, encoding="utf-8")
    bundled = get_tagger()
    assert Tagger.from_path(same).version == bundled.version
    copy = Tagger.from_path(edited)
    assert copy.declared_version == bundled.declared_version
    assert copy.version == f"{bundled.declared_version}+local.{copy.fingerprint[:8]}"
    assert copy.version != bundled.version and len(copy.version) <= 32  # the stored column


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('version: "test-1"', 'version: "a-very-long-version-name"', "at most 16 characters"),
        (
            "    threshold: 0.3\n    terms: [ISIS",
            "    threshold: 0.3\n    background: near_isis\n    terms: [ISIS",
            "background must name a context with window: sentence",
        ),
        (
            "{topic_terms: isis, window: 100}",
            "{topic_terms: isis, window: sentence}",
            "window: sentence is only for contexts with terms",
        ),
        (
            "{topic_terms: isis, window: 100}",
            "{topic_terms: isis, window: 100, years: true}",
            "years and months are only for contexts with window: sentence",
        ),
        ("years: true", "years: 2014", "years must be true, false or a mapping"),
        ("years: true", "years: {until: 20}", "from and until must be years from 1900 to 2099"),
        ("years: true", "years: {from: 2020, until: 2010}", "from must not come after until"),
    ],
)
def test_malformed_versions_and_sentence_contexts(tmp_path, old, new, expected):
    text = MINIMAL.replace("WEIGHT", "1").replace(
        "  near_isis: {topic_terms: isis, window: 100}\n",
        "  near_isis: {topic_terms: isis, window: 100}\n"
        "  past: {terms: [at the time], years: true, window: sentence}\n",
    )
    assert old in text
    with pytest.raises(TaxonomyError, match=expected):
        Tagger.from_path(write(tmp_path, text.replace(old, new)))


# --- held out: items written for the audit, not tuned on ------------------------------------------
# (id, title, text, topics it must have, topics it must not have). Written after the rules of
# version 2.2, which passed 23 of them; the dev set (benchmarks/data) is what rules are tuned on.

HELD_OUT = [
    ("en-isis-arrest", "", "Police in Salahuddin arrested a suspected Islamic State member accused "
     "of planting bombs on the road to Baiji, the provincial command said.", {"isis"}, set()),
    ("en-isis-detain", "", "Kurdish security forces detained three Daesh suspects at a checkpoint "
     "outside Makhmour on Sunday.", {"isis"}, set()),
    ("en-isis-raid", "Troops storm hideout", "Iraqi troops stormed an ISIS hideout in the Hamrin "
     "mountains and seized weapons and explosives.", {"isis"}, set()),
    ("en-isis-camp", "", "Authorities flew 150 Iraqi women and children home from al-Hol camp on "
     "Wednesday, the ministry of migration said.", {"isis"}, set()),
    ("en-isis-sleeper", "", "A sleeper cell of the Islamic State was dismantled in Raqqa's western "
     "countryside, a local commander told reporters.", {"isis"}, set()),
    ("ar-isis-attack", "", "هاجم مسلحون من داعش نقطة عسكرية في ريف دير الزور الشرقي فجر اليوم.",
     {"isis"}, set()),
    ("ar-isis-arrest", "", "ألقت القوات الأمنية القبض على ثلاثة عناصر من تنظيم الدولة في قضاء "
     "الحويجة.", {"isis"}, set()),
    ("ar-isis-plot", "", "أحبطت قوة أمنية مخططا لداعش كان يستهدف زوارا في كربلاء، بحسب بيان "
     "لخلية الإعلام الأمني.", {"isis"}, set()),
    ("ar-isis-camp", "", "أعادت السلطات العراقية دفعة جديدة من العائلات من مخيم الهول إلى مخيم "
     "الجدعة جنوب الموصل.", {"isis"}, set()),
    ("en-coal-uk", "RAF jets hit militants in Anbar", "British Typhoons struck an ISIS hideout in "
     "the Anbar desert on Friday, the Ministry of Defence said.", {"isis", "coalition"}, set()),
    ("ar-coal-strike", "", "نفذت طائرات التحالف الدولي غارة جوية على مخبأ لعناصر داعش في "
     "سلسلة جبال حمرين.", {"isis", "coalition"}, set()),
    ("en-coal-centcom", "", "CENTCOM said its forces killed an ISIS official responsible for "
     "prison break plots in a helicopter raid in northern Syria.", {"isis", "coalition"}, set()),
    ("en-reg-intel", "", "Iraqi and Syrian intelligence chiefs met in Baghdad and agreed to share "
     "intelligence on ISIS cells moving across the border.", {"regional_cooperation"}, set()),
    ("en-reg-pkk", "", "Turkey and Iraq agreed to set up a joint operations centre to coordinate "
     "action against the PKK, the two foreign ministers said.", {"regional_cooperation"}, set()),
    ("ar-reg-drugs", "", "اتفق وزيرا الداخلية الأردني والعراقي على تعزيز التعاون الأمني وتبادل "
     "المعلومات لمكافحة تهريب المخدرات عبر الحدود.", {"regional_cooperation"}, set()),
    ("en-coalition-gov", "Budget passes", "Iraq's coalition government pushed the budget through "
     "parliament after weeks of haggling between the blocs.", set(), {"coalition"}),
    ("ar-electoral-bloc", "", "أعلن تحالف انتخابي جديد في البصرة قائمة مرشحيه لانتخابات مجالس "
     "المحافظات.", set(), {"coalition"}),
    ("en-snc", "", "The Syrian National Coalition elected a new president at its meeting in "
     "Istanbul on Saturday.", set(), {"coalition"}),
    ("ar-yemen", "", "قال التحالف بقيادة السعودية إن دفاعاته الجوية اعترضت صاروخا أطلقه "
     "الحوثيون باتجاه جازان.", set(), {"coalition"}),
    ("en-yemen", "Strikes on Hodeidah", "Coalition jets bombed Houthi positions near Hodeidah, "
     "the Saudi-led coalition said in a statement.", set(), {"coalition"}),
    ("en-hts", "", "Hayat Tahrir al-Sham fighters clashed with government troops in southern "
     "Idlib, and an al-Qaeda affiliate claimed a drone attack on an army post.", set(), {"isis"}),
    ("ar-hts", "", "اعتقلت هيئة تحرير الشام قياديا في تنظيم حراس الدين المرتبط بالقاعدة في "
     "ريف إدلب.", set(), {"isis"}),
    ("en-economy", "", "Jordan and Iraq signed agreements on electricity interconnection, "
     "customs and trade at a meeting in Amman.", set(), {"regional_cooperation"}),
    ("ar-economy", "", "وقعت مصر والعراق مذكرات تفاهم في مجالات الطاقة والاستثمار والنقل خلال "
     "زيارة رئيس الوزراء إلى القاهرة.", set(), {"regional_cooperation"}),
    ("en-us-only", "", "Jordan and the United States signed a defence cooperation agreement "
     "covering training and border security.", set(), {"regional_cooperation"}),
    ("ar-us-only", "", "بحث وزير الدفاع العراقي مع نظيره الأمريكي التعاون الأمني ومستقبل "
     "مهمة المستشارين.", set(), {"regional_cooperation"}),
    ("en-bg-olive", OLIVE_TITLE, OLIVE, set(), {"isis"}),
    ("en-bg-olive-long", OLIVE_TITLE, OLIVE + OLIVE_MORE * 3, set(), {"isis"}),
    ("en-bg-stadium", "Mosul stadium reopens", "Mosul's football stadium reopened on Friday "
     "with a friendly between two local clubs. The stands, used as a firing position by ISIS "
     "fighters who were killed there in 2017, have been rebuilt with money from the provincial "
     "budget, and ten thousand fans attended.", set(), {"isis"}),
    ("ar-bg-bridge", "", "افتتح محافظ نينوى الجسر القديم في الموصل بعد إعادة تأهيله، وهو الجسر "
     "الذي فجره مسلحو داعش إبان سيطرتهم على المدينة عام 2014. وقال المحافظ إن الجسر سيخفف "
     "الزحام في الجانب الأيمن، وإن أعمال تأهيل جسرين آخرين ستبدأ الشهر المقبل بتمويل من "
     "الموازنة الاتحادية.", set(), {"isis"}),
    ("ar-bg-school", "", "عادت الدراسة إلى مدرسة ابتدائية في قضاء سنجار لأول مرة منذ هزيمة "
     "داعش، بعد أن أعادت منظمة محلية بناء صفوفها وتجهيزها بالمقاعد. وقال مدير المدرسة إن "
     "أكثر من ثلاثمئة تلميذ سجلوا هذا العام.", set(), {"isis"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("title", "text", "given", "not_given"), [h[1:] for h in HELD_OUT], ids=[h[0] for h in HELD_OUT]
)
def test_held_out_items(tagger, title, text, given, not_given):
    topics = topics_of(tagger.tag(title, text))
    assert given <= topics and not (not_given & topics), tagger.explain(title, text)["topics"]


DILUTION = {  # unrelated paragraphs, written for this test: they lengthen a text, adding no hit
    "en": "The town council approved a budget for new pavements and street lights, and the "
    "library will open on Saturdays from next month. Farmers said the late rains helped the "
    "wheat, though prices at the market stayed low.",
    "ar": "وافق المجلس البلدي على ميزانية لرصف الأرصفة وإنارة الشوارع، وستفتح المكتبة أبوابها "
    "أيام السبت اعتبارا من الشهر المقبل. وقال مزارعون إن الأمطار المتأخرة أفادت القمح.",
}


def test_tag_gives_exactly_what_explain_calls_given(tagger, monkeypatch):
    """tag() takes a shortcut that explain() does not: a topic whose highest possible score (every
    anchor counted in full, support at its most) is below its threshold is dropped before its
    contexts are asked. That must be an upper bound of the score, and both must give the same
    topics, scores, evidence, places and actors. The dev items, each cut after every sentence,
    without its title and diluted by unrelated paragraphs, put many scores near the thresholds."""
    dev = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "tagging-dev.jsonl"
    items = [json.loads(line) for line in dev.read_text(encoding="utf-8").splitlines() if line]
    cases = []
    for item in items:
        sentences = re.split(r"(?<=[.!?\u061f])\s+", item["text"])
        cases += [(item["title"], " ".join(sentences[:k])) for k in range(1, len(sentences) + 1)]
        filler = DILUTION["ar" if item["language"] == "ar" else "en"]
        cases.append(("", item["text"]))
        for n in (1, 3, 6, 10):  # before the item, and after it (its hits stay in the lede)
            cases.append(("", "\n\n".join([filler] * n + [item["text"]])))
            cases.append((item["title"], "\n\n".join([item["text"]] + [filler] * n)))
    reach: dict[str, float] = {}  # topic -> its highest possible score, as tag() found it
    highest = tagger._reach

    def recorded(found, density):
        topic = found[0][0].group.removeprefix("topic:")
        reach[topic] = highest(found, density)
        return reach[topic]

    monkeypatch.setattr(tagger, "_reach", recorded)
    dropped = kept = 0
    for title, text in cases:
        explained = tagger.explain(title, text)
        reach.clear()
        result = tagger.tag(title, text)
        for t in explained["topics"]:
            if t["score"] > 0:  # it had anchors: tag() asked how far it could reach
                assert t["score"] <= reach[t["topic"]] + 0.0005, (t, title, text)
                threshold = t["threshold"] - 0.001
                dropped += reach[t["topic"]] < threshold
                kept += reach[t["topic"]] >= threshold
        given = [
            {
                "topic": t["topic"],
                "score": t["score"],
                "evidence": [{k: v for k, v in e.items() if k != "rule"} for e in t["evidence"]],
            }
            for t in explained["topics"]
            if t["given"]
        ]
        assert [t.to_dict() for t in result.topics] == given, (title, text)
        assert (list(result.places), list(result.actors)) == (
            explained["places"],
            explained["actors"],
        )
    assert dropped >= 30 and kept >= 300  # the shortcut is taken, and not taken, often


# --- the phrase finder --------------------------------------------------------------------------

PHRASES = """\
version: "t-3"
contexts:
  near_isis: {topic_terms: isis, window: 40}
topics:
  isis:
    threshold: 0.3
    terms: [ISIS, Islamic State, Islamic State group, "terror*", {term: IS, case: sensitive}]
    support: [cell, sleeper cell, "attack*"]
  coalition:
    threshold: 0.3
    terms: [{term: coalition, needs: near_isis}, US-led coalition, "coalition strike*"]
  regional_cooperation:
    threshold: 0.3
    terms: [security cooperation, joint patrols, joint patrols along the border]
places:
  - {name: Syria, terms: [Syria, Syrian]}
  - {name: Iraq, terms: [Iraq]}
actors:
  - {name: SDF, terms: [SDF, Syrian Democratic Forces]}
"""

WORDS = [
    "ISIS", "Islamic", "State", "group", "IS", "is", "terror", "terrorists", "cell", "sleeper",
    "attack", "attacked", "coalition", "US-led", "U.S.-led", "strike", "strikes", "security",
    "cooperation", "joint", "patrols", "along", "the", "border", "Syria", "Syrian", "Democratic",
    "Forces", "SDF", "Iraq", "the", "of", "a", "in", "and", "Türkiye", "said",
]  # fmt: skip
SEPARATORS = (" ", " ", " ", ", ", ". ", " - ", "'s ", "\n\n", "  ", "-", "’", "\u00ad")


def random_texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 60)):
            word = rng.choice(WORDS)
            parts.append(word.upper() if rng.random() < 0.05 else word)
            parts.append(rng.choice(SEPARATORS))
        texts.append("".join(parts[: -1 if rng.random() < 0.5 else None]))
    return texts


# Arabic: clitics (و ف ب ل ال), attached pronouns, a ة that becomes ت, wildcards, phrases that
# the conjunction reading cuts short ("وزير" is و + "زير" before it is "وزير الداخلية").
PHRASES_AR = """\
version: "t-4"
contexts:
  near_isis: {topic_terms: isis, window: 40}
topics:
  isis:
    threshold: 0.3
    terms: [داعش*, تنظيم الدولة, تنظيم الدولة الإسلامية, خلية, زير, وزير الداخلية]
    support: [هجوم*, عناصر, الخلايا النائمة]
  coalition:
    threshold: 0.3
    terms: [{term: التحالف, needs: near_isis}, التحالف الدولي, قوات التحالف]
  regional_cooperation:
    threshold: 0.3
    terms: [التعاون الأمني, اتفاق أمني, وزراء الداخلية]
places:
  - {name: Iraq, terms: [العراق, عراق*]}
"""

WORDS_AR = [
    "داعش", "لداعش", "وداعش", "فلداعش", "الداعشي", "تنظيم", "الدولة", "الإسلامية", "خلية",
    "خليته", "وخلاياهم", "خلايا", "زير", "وزير", "الداخلية", "وزراء", "هجوم", "هجوما",
    "والهجمات", "عناصر", "عناصره", "الخلايا", "النائمة", "التحالف", "بالتحالف", "وللتحالف",
    "تحالف", "الدولي", "قوات", "قواته", "التعاون", "الأمني", "اتفاق", "اتفاقا", "أمنيا", "أمني",
    "العراق", "والعراقية", "في", "من", "على", "ISIS", "وَداعِش", "داعـــش", "داعشISIS",
    "ISISداعش", "العراق2014", "terrorداعش", "terrorism",
]  # fmt: skip
SEPARATORS_AR = (" ", " ", " ", "، ", ". ", "  ", "\n", " - ", "\u200f ")


def random_arabic_texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 50)):
            parts.append(rng.choice(WORDS_AR))
            parts.append(rng.choice(SEPARATORS_AR))
        texts.append("".join(parts[: -1 if rng.random() < 0.5 else None]))
    return texts


@pytest.mark.parametrize("taxonomy", ["bundled", "phrases", "arabic"])
def test_phrase_automaton_finds_what_the_expression_finds(tmp_path, monkeypatch, taxonomy):
    """The Aho-Corasick automata only say where the Latin and Arabic expressions would match:
    phrases after runs of spaces, wildcards, overlaps, phrases ending the text, Arabic clitics
    and pronouns tag alike without them."""
    pytest.importorskip("ahocorasick_rs")
    path = {"bundled": None, "phrases": PHRASES, "arabic": PHRASES_AR}[taxonomy]
    path = path if path is None else write(tmp_path, path)
    automaton = Tagger.from_path(path)
    monkeypatch.setattr(marsad._match, "ahocorasick_rs", None)
    expression = Tagger.from_path(path)
    for finder in ("_latin_finder", "_arabic_finder"):
        if getattr(automaton._lexicon, finder) is not None:
            assert getattr(automaton._lexicon, finder).compiled
            assert not getattr(expression._lexicon, finder).compiled
    texts = random_texts(7, 300) + random_arabic_texts(11, 300)
    for text in texts + [ISIS_ATTACK_TEXT, "U.S.-led coalition", "IS  group", "وزير  الداخلية"]:
        title = text[:40]
        assert automaton.explain(title, text) == expression.explain(title, text), text
        assert automaton.tag(title, text) == expression.tag(title, text), text


def test_phrase_finders_agree_with_their_expressions_on_the_taxonomys_own_words(tagger):
    """Texts made of the bundled taxonomy's own words (Latin and Arabic, some capitalised or with
    an ending added) run together with punctuation: phrases overlap, go on after runs of spaces,
    stop short inside longer words. Each finder's spans are exactly its expression's."""
    words = set()
    for path in (Path(marsad.tagging.__file__).parent / "taxonomy").glob("*.yaml"):
        for token in re.findall(r"[A-Za-z\u0621-\u064a]{2,}", path.read_text(encoding="utf-8")):
            words.add(token)
    words = sorted(words)
    separators = (" ", " ", " ", "  ", "-", ". ", ", ", "'s ", "\u2019", " - ", "\u200f ", "\u00ad")
    endings = ("", "", "", "s", "i", "ed", "\u0629", "\u0647\u0627", "\u064a\u0646")
    rng = random.Random(5)
    lexicon = tagger._lexicon
    finders = [f for f in (lexicon._latin_finder, lexicon._arabic_finder) if f is not None]
    assert len(finders) == 2 and all(f.compiled for f in finders)
    compared = 0
    for _ in range(1500):
        parts = []
        for _ in range(rng.randint(1, 30)):
            word = rng.choice(words) + rng.choice(endings)
            parts += [word.upper() if rng.random() < 0.1 else word, rng.choice(separators)]
        projection = marsad.tagging._Field("text", 1, "".join(parts)).projection
        for finder in finders:
            expected = {m.start(): m.end() for m in finder.rx.finditer(projection)}
            assert finder.spans(projection) == expected, projection
            compared += bool(expected)
    assert compared > 1500  # most texts hold phrases


def test_results_are_ordinary_frozen_values(tagger):
    result = tagger.tag(ISIS_ATTACK_TITLE, ISIS_ATTACK_TEXT)
    tag = result.topics[0]
    evidence = tag.evidence[0]
    same = Evidence(evidence.term, evidence.field, evidence.start, evidence.end)
    assert evidence == same and hash(evidence) == hash(same) and repr(evidence) == repr(same)
    assert tag == TopicTag(tag.topic, tag.score, tag.evidence)
    assert result == TagResult(result.topics, result.places, result.actors)
    with pytest.raises(dataclasses.FrozenInstanceError):
        evidence.start = 0  # type: ignore[misc]
