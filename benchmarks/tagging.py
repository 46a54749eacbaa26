"""Topic-tagging quality on the labelled dev set, and tagging speed on one core.

    python benchmarks/tagging.py [--dev benchmarks/data/tagging-dev.jsonl]
                                 [--long benchmarks/data/tagging-long.jsonl]
                                 [--corpus /work/shared/corpus/extraction-dev] [--errors]

Quality: every dev item (``{"id", "language", "title", "text", "topics", "note"}`` per line) is
tagged with ``get_tagger().tag(title, text, language)``; per topic, a predicted topic the item does
not carry is a false positive and a missing one a false negative. Precision, recall, F1 and support
(items labelled with the topic) are printed for all items and per language, then the macro mean
over topics, the micro figures over all topic decisions, the share of items whose predicted topic
set is exactly right, and how many items labelled with no topic got one. Precision with no
prediction is 1.0 when the topic has no support there and 0.0 otherwise. ``--errors`` lists every
false positive (with the evidence terms that fired) and false negative (with the item's note and
whatever other topics fired).

Speed: articles per second and MB/s (UTF-8 bytes of title + text) of ``tag`` in this process,
pinned to one CPU where the OS allows, best of three runs (a run repeats the set until it lasts
``--min-seconds``). ``--corpus`` is an extraction corpus folder (``html/<id>.html.gz`` and
``ground-truth.json``, as benchmarks/extraction.py reads); its pages are extracted once with
``marsad.extract.extract_page`` before any timing and the realistic full-length texts are tagged.
The corpus is read in place, never copied. The dev items are timed as well.

Rows: corpus articles as extracted (mostly off-topic); each with three dev texts spliced in (dense
with hits); realistic on-topic articles, written for this benchmark (not dev items): an English
news story of the beat (title and two paragraphs, 15-25 hits) above each corpus article's text,
and Arabic stories followed by Arabic paragraphs of other news, about 4-5 KB each; the long
articles of ``--long`` (on the beat or near it); the dev items; ten dev items per text (the worst
case).

The long articles (``--long``, ``{"id", "language", "title", "text", "topics", "note"}`` per line
as the dev set) are scored the same way, apart: full-length stories, 60 % of them about something
else with a background mention of the beat.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from marsad.tagging import TOPICS, get_tagger

DEFAULT_DEV = Path(__file__).resolve().parent / "data" / "tagging-dev.jsonl"
# Full-length articles (1.5-4.5 KB, several paragraphs, background paragraphs), written blind to
# the taxonomy: the dev set's short items say less about mentions deep in a long article.
DEFAULT_LONG = Path(__file__).resolve().parent / "data" / "tagging-long.jsonl"
LANGUAGES = ("en", "ar")
RUNS = 3


@dataclass(frozen=True)
class Item:
    id: str
    language: str
    title: str
    text: str
    topics: frozenset[str]
    note: str


@dataclass(frozen=True)
class Doc:
    """One text to tag for the speed measurement."""

    title: str
    text: str
    language: str | None

    @property
    def size(self) -> int:
        return len(self.title.encode("utf-8")) + len(self.text.encode("utf-8"))


def load_dev(path: Path) -> list[Item]:
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        unknown = set(record["topics"]) - set(TOPICS)
        if unknown:
            raise SystemExit(f"{path}:{number}: unknown topics {sorted(unknown)}")
        items.append(
            Item(
                record["id"],
                record["language"],
                record["title"],
                record["text"],
                frozenset(record["topics"]),
                record.get("note", ""),
            )
        )
    return items


# --- quality -----------------------------------------------------------------------------------


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def support(self) -> int:
        return self.tp + self.fn

    @property
    def precision(self) -> float:
        if self.tp + self.fp == 0:
            return 1.0 if self.support == 0 else 0.0
        return self.tp / (self.tp + self.fp)

    @property
    def recall(self) -> float:
        return self.tp / self.support if self.support else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def count(items: Iterable[Item], predicted: dict[str, frozenset[str]], topic: str) -> Counts:
    c = Counts()
    for item in items:
        want, got = topic in item.topics, topic in predicted[item.id]
        c.tp += want and got
        c.fp += got and not want
        c.fn += want and not got
    return c


def row(name: str, support: int | str, c: Counts | None, p: float, r: float, f1: float) -> str:
    tally = f"{c.tp:5d} {c.fp:5d} {c.fn:5d}" if c else " " * 17
    return f"  {name:<22} {support:>7} {tally} {p:9.3f} {r:7.3f} {f1:7.3f}"


def report(title: str, items: Sequence[Item], predicted: dict[str, frozenset[str]]) -> None:
    print(f"\n{title} ({len(items)} items)")
    print(
        f"  {'':<22} {'support':>7} {'tp':>5} {'fp':>5} {'fn':>5} {'precision':>9} "
        f"{'recall':>7} {'F1':>7}"
    )
    per_topic = {topic: count(items, predicted, topic) for topic in TOPICS}
    for topic, c in per_topic.items():
        print(row(topic, c.support, c, c.precision, c.recall, c.f1))
    n = len(per_topic)
    macro = [
        sum(getattr(c, m) for c in per_topic.values()) / n for m in ("precision", "recall", "f1")
    ]
    print(row("macro", "", None, *macro))
    micro = Counts(*(sum(getattr(c, f) for c in per_topic.values()) for f in ("tp", "fp", "fn")))
    print(row("micro", micro.support, micro, micro.precision, micro.recall, micro.f1))
    exact = sum(item.topics == predicted[item.id] for item in items)
    untagged = [item for item in items if not item.topics]
    wrongly = sum(bool(predicted[item.id]) for item in untagged)
    print(
        f"  exact topic set {exact}/{len(items)} = {exact / len(items):.3f}; "
        f"items labelled with no topic that got one: {wrongly}/{len(untagged)}"
    )


def evidence_terms(item: Item, result, topic: str | None = None) -> str:
    """The evidence as term@field, plus the matched text where it differs from the term."""
    fields = {"title": item.title, "text": item.text}
    parts = []
    for tag in result.topics:
        if topic is not None and tag.topic != topic:
            continue
        terms = []
        for e in tag.evidence:
            surface = fields.get(e.field, "")[e.start : e.end]
            shown = f"{e.term!r}" if surface == e.term else f"{e.term!r}={surface!r}"
            terms.append(f"{shown}@{e.field}")
        terms = ", ".join(terms)
        parts.append(f"{tag.topic} {tag.score:.2f}: {terms}" if topic is None else terms)
    return "; ".join(parts) or "-"


def list_errors(items: Sequence[Item], results: dict) -> None:
    predicted = {item.id: topics_of(results[item.id]) for item in items}
    for topic in TOPICS:
        fps = [i for i in items if topic in predicted[i.id] and topic not in i.topics]
        fns = [i for i in items if topic in i.topics and topic not in predicted[i.id]]
        print(f"\n== {topic}: {len(fps)} false positives, {len(fns)} false negatives")
        for item in fps:
            print(f"  FP {item.id}  {item.title}")
            print(f"       evidence: {evidence_terms(item, results[item.id], topic)}")
            if item.note:
                print(f"       note: {item.note}")
        for item in fns:
            print(f"  FN {item.id}  {item.title}")
            print(
                f"       labels: {', '.join(sorted(item.topics))}; "
                f"tagger gave: {evidence_terms(item, results[item.id])}"
            )
            if item.note:
                print(f"       note: {item.note}")


def topics_of(result) -> frozenset[str]:
    return frozenset(tag.topic for tag in result.topics)


# --- speed ---------------------------------------------------------------------------------------


def pin_to_one_core() -> str:
    """Pin this process to the CPU that was idlest over a moment (on a shared machine the first
    CPU is often the busiest), so that the figures are one core's."""
    if hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        idle = idle_time(allowed)
        time.sleep(0.5)
        after = idle_time(allowed)
        cpu = max(allowed, key=lambda c: (after.get(c, 0) - idle.get(c, 0), -c))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}, the idlest of {len(allowed)}"
    return "not pinned (no sched_setaffinity here), single process"


def idle_time(cpus: Sequence[int]) -> dict[int, int]:
    """Idle ticks of each CPU so far (/proc/stat; empty where there is none)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        name, *ticks = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            out[int(name[3:])] = int(ticks[3]) + int(ticks[4])  # idle + iowait
    return out


def corpus_docs(folder: Path) -> tuple[list[Doc], int]:
    """Extract every page once (not timed); returns the documents with text and the page count."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from extraction import load_corpus  # the same corpus reader as the extraction benchmark

    from marsad.extract import extract_page

    logging.getLogger("trafilatura").setLevel(logging.ERROR)
    pages = load_corpus(folder)
    docs = []
    for page in pages:
        extracted = extract_page(page.html, page.url)
        if extracted.text:
            docs.append(Doc(extracted.title or "", extracted.text, extracted.language))
    return docs, len(pages)


def on_topic(docs: Sequence[Doc], items: Sequence[Item]) -> list[Doc]:
    """Each corpus article with three labelled on-topic dev texts of its language spliced in at a quarter, half
    and three quarters of its length: an article of the beat, at a real article's length."""
    relevant = {
        lang: [i for i in items if i.topics and i.language == lang] for lang in LANGUAGES
    }
    out = []
    for n, doc in enumerate(docs):
        pool = relevant["ar" if doc.language == "ar" else "en"]
        text = doc.text
        for k, fraction in enumerate((0.75, 0.5, 0.25)):
            at = text.rfind("\n", 0, int(len(text) * fraction)) + 1
            text = text[:at] + pool[(3 * n + k) % len(pool)].text + "\n" + text[at:]
        out.append(Doc(doc.title, text, doc.language))
    return out


# Stories of the beat for the realistic rows, written for this benchmark.
ARTICLES_EN = [
    (
        "Iraqi troops hunt Islamic State cells in Kirkuk's hills after deadly ambush",
        "Iraqi army units backed by federal police began a sweep of the hills south-west of Kirkuk "
        "on Thursday, two days after Islamic State militants ambushed an army patrol near the "
        "village of Wadi al-Shay, killing three soldiers and wounding five. Officers at the scene "
        "said the attackers had used a roadside bomb to stop the lead vehicle before opening fire "
        "from an irrigation ditch. The group claimed the attack through its Amaq outlet on "
        "Wednesday evening.\n\n"
        "Security officials say a few dozen ISIS fighters still move between caves in the area, "
        "crossing at night into the Hamrin range and the orchards along the Zab river. They live "
        "off extortion of shepherds and truck drivers and rarely stay in one hideout for more "
        "than a week, which makes them hard to pin down, an intelligence officer said.",
    ),
    (
        "Coalition jets strike ISIS hideouts in Syrian desert, CENTCOM says",
        "Aircraft of the US-led coalition carried out a series of strikes on Islamic State "
        "hideouts in the central Syrian desert overnight, US Central Command said on Saturday, "
        "killing at least seven militants including a regional commander. The strikes targeted "
        "camps used to store weapons and to plan attacks on Syrian Democratic Forces positions "
        "east of the Euphrates.\n\n"
        "CENTCOM said the operation aimed to disrupt the group's ability to regroup in the Badia, "
        "where cells have stepped up attacks on truffle hunters and army convoys this year. "
        "Coalition forces remain at several bases in north-east Syria and in Iraq's Anbar "
        "province under the Operation Inherent Resolve mission.",
    ),
    (
        "Iraq and Syria agree to share intelligence on ISIS movements along the border",
        "Senior security officials from Iraq and Syria met in Baghdad on Monday and agreed to "
        "exchange intelligence on Islamic State cells moving across their shared border, the "
        "Iraqi national security adviser's office said. The two delegations discussed a joint "
        "operations room to coordinate patrols on both sides of the frontier near al-Qaim and "
        "Albu Kamal.\n\n"
        "Iraqi officials have long complained that militants use the desert crossing points to "
        "smuggle weapons and fighters, and the talks also covered the fate of Iraqi nationals "
        "held in al-Hol camp, thousands of whom are due to be repatriated this year.",
    ),
    (
        "SDF arrests suspected ISIS financier in Deir ez-Zor raid",
        "The Syrian Democratic Forces said on Tuesday they had arrested a man suspected of "
        "collecting money for the Islamic State in the villages of eastern Deir ez-Zor. The "
        "arrest came during a dawn raid supported by coalition helicopters, an SDF statement "
        "said, and investigators seized ledgers, mobile phones and cash.\n\n"
        "According to the statement, the suspect had transferred funds to families in al-Hol "
        "camp and paid fighters who carried out assassinations of local council members. The "
        "SDF has detained dozens of alleged ISIS operatives in the area since the start of the "
        "year.",
    ),
    (
        "Jordan and Iraq hold talks on border security and Captagon smuggling",
        "Jordan's interior minister received his Iraqi counterpart in Amman on Wednesday for "
        "talks on border security, drug smuggling and counter-terrorism cooperation, the "
        "Jordanian news agency reported. The two ministers agreed to set up a joint security "
        "committee that will meet every three months and to exchange information on wanted "
        "suspects.\n\n"
        "Officials said smugglers had increasingly used the desert east of the Trebil crossing "
        "to move Captagon pills and weapons, and that ISIS remnants in Anbar had profited from "
        "the trade.",
    ),
]
ARTICLES_AR = [
    (
        "مقتل أربعة عناصر من داعش بعملية أمنية في صحراء الأنبار",
        "أعلنت خلية الإعلام الأمني في العراق، اليوم الأحد، مقتل أربعة عناصر من تنظيم داعش "
        "بعملية نفذها جهاز مكافحة الإرهاب في صحراء الأنبار غربي البلاد، بعد متابعة "
        "استخبارية استمرت أسابيع.\n\n"
        "وقالت الخلية في بيان إن القوة داهمت مضافة كان يستخدمها الإرهابيون لتخزين الأسلحة "
        "والعبوات الناسفة، وعثرت على أحزمة ناسفة وأجهزة اتصال، مشيرة إلى أن العملية جاءت "
        "بعد هجمات شنها التنظيم على رعاة ومواقع للجيش في المنطقة خلال الشهر الماضي.",
    ),
    (
        "غارات للتحالف الدولي على مواقع لتنظيم الدولة في البادية السورية",
        "شنت طائرات التحالف الدولي بقيادة الولايات المتحدة غارات جوية على مواقع لتنظيم "
        "الدولة الإسلامية في البادية السورية، ما أسفر عن مقتل عدد من مسلحي التنظيم، وفق ما "
        "أعلنته القيادة المركزية الأمريكية.\n\n"
        "وأضافت القيادة أن الضربات استهدفت مخابئ تستخدمها خلايا التنظيم للتخطيط لهجمات على "
        "قوات سوريا الديمقراطية، في إطار عملية العزم الصلب لمنع التنظيم من إعادة تنظيم صفوفه.",
    ),
    (
        "العراق والأردن يبحثان التعاون الأمني وتبادل المعلومات",
        "بحث وزير الداخلية العراقي مع نظيره الأردني في عمان التعاون الأمني بين البلدين "
        "وتبادل المعلومات الاستخبارية لملاحقة المطلوبين ومكافحة تهريب المخدرات عبر الحدود "
        "المشتركة.\n\n"
        "واتفق الجانبان على تشكيل لجنة أمنية مشتركة تجتمع بشكل دوري، وعلى تعزيز التنسيق "
        "لمواجهة خلايا داعش التي تنشط في الصحراء الممتدة بين البلدين.",
    ),
]
FILLER_AR = [
    "وفي شأن آخر، أعلنت وزارة الزراعة أن محصول القمح هذا الموسم تجاوز التوقعات بفضل الأمطار "
    "الغزيرة التي شهدتها البلاد في الشتاء، وقالت إنها تسلمت من الفلاحين أكثر من مليوني طن حتى "
    "الآن، داعية إلى الإسراع في صرف المستحقات المالية المتأخرة.",
    "وعلى صعيد الخدمات، قالت دائرة الكهرباء في المحافظة إن ساعات التجهيز ستتحسن خلال الأسابيع "
    "المقبلة مع دخول محطة جديدة إلى الخدمة، فيما اشتكى سكان أحياء عدة من انقطاعات متكررة في "
    "ظل ارتفاع درجات الحرارة إلى ما فوق الخمسين.",
    "اقتصاديا، استقر سعر صرف الدولار في الأسواق المحلية بعد أسابيع من التذبذب، وعزا تجار ذلك "
    "إلى إجراءات البنك المركزي الأخيرة، في حين توقع خبراء أن تبقى أسعار المواد الغذائية مرتفعة "
    "حتى نهاية العام بسبب كلفة الاستيراد والنقل.",
    "رياضيا، تأهل فريق المدينة إلى الدور نصف النهائي من بطولة الكأس بعد فوزه بهدفين مقابل هدف، "
    "وقال مدرب الفريق إن اللاعبين قدموا مباراة كبيرة رغم الغيابات، متطلعا إلى مواجهة صعبة في "
    "الجولة المقبلة أمام حامل اللقب.",
    "وفي الصحة، أطلقت الوزارة حملة لتلقيح الأطفال ضد الحصبة وشلل الأطفال في المدارس ورياض "
    "الأطفال، مؤكدة أن الفرق الجوالة ستصل إلى القرى النائية، وأن اللقاحات متوفرة في جميع المراكز "
    "الصحية مجانا.",
]


def realistic_en(docs: Sequence[Doc]) -> list[Doc]:
    """Each corpus article under an English story of the beat: its title, the story as the lede,
    then the article's own text (the rest of a news page)."""
    out = []
    for n, doc in enumerate(docs):
        title, story = ARTICLES_EN[n % len(ARTICLES_EN)]
        out.append(Doc(title, story + "\n\n" + doc.text, "en"))
    return out


def realistic_ar(count: int = 30) -> list[Doc]:
    """Arabic stories of the beat, each followed by ten paragraphs of other news."""
    out = []
    for n in range(count):
        title, story = ARTICLES_AR[n % len(ARTICLES_AR)]
        rest = [FILLER_AR[(n + k) % len(FILLER_AR)] for k in range(10)]
        out.append(Doc(title, "\n\n".join([story, *rest]), "ar"))
    return out


def dense(items: Sequence[Item]) -> list[Doc]:
    """The worst case: ten dev texts of one language per document, nearly every sentence a hit."""
    out = []
    for lang in LANGUAGES:
        pool = [i for i in items if i.language == lang]
        for k in range(0, len(pool), 10):
            chunk = pool[k : k + 10]
            out.append(Doc(chunk[0].title, "\n\n".join(i.text for i in chunk), lang))
    return out


def throughput(docs: Sequence[Doc], min_seconds: float) -> tuple[float, float]:
    """Best of RUNS runs: (articles per second, MB per second)."""
    tagger = get_tagger()
    for doc in docs[:5]:  # warm up lazily built state outside the timing
        tagger.tag(doc.title, doc.text, doc.language)
    size = sum(doc.size for doc in docs)
    best = float("inf")  # seconds per pass over docs
    for _ in range(RUNS):
        start = time.perf_counter()
        passes = 0
        while True:
            for doc in docs:
                tagger.tag(doc.title, doc.text, doc.language)
            passes += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = min(best, elapsed / passes)
    return len(docs) / best, size / best / 1e6


def speed_line(name: str, docs: Sequence[Doc], min_seconds: float) -> str:
    if not docs:
        return f"  {name}: no documents"
    per_s, mb_s = throughput(docs, min_seconds)
    mean_kb = sum(doc.size for doc in docs) / len(docs) / 1000
    return (
        f"  {name:<34} {len(docs):5d} docs {mean_kb:7.1f} KB mean "
        f"{per_s:10.1f} articles/s {mb_s:8.2f} MB/s"
    )


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dev", type=Path, default=DEFAULT_DEV, help="labelled JSONL dev set")
    parser.add_argument(
        "--long", type=Path, default=DEFAULT_LONG, help="labelled JSONL set of long articles"
    )
    parser.add_argument("--corpus", type=Path, help="extraction corpus folder for the speed test")
    parser.add_argument("--errors", action="store_true", help="list false positives/negatives")
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=1.0,
        help="shortest duration of one timed run (the set is repeated)",
    )
    args = parser.parse_args()

    items = load_dev(args.dev)
    tagger = get_tagger()
    results = {item.id: tagger.tag(item.title, item.text, item.language) for item in items}
    predicted = {item_id: topics_of(result) for item_id, result in results.items()}
    by_language = {lang: [i for i in items if i.language == lang] for lang in LANGUAGES}
    sizes = ", ".join(f"{len(v)} {k}" for k, v in by_language.items())
    print(f"tagger version {tagger.version}; dev set {args.dev}: {len(items)} items ({sizes})")

    report("all languages", items, predicted)
    for lang, subset in by_language.items():
        if subset:
            report(f"language {lang}", subset, predicted)
    if args.errors:
        list_errors(items, results)

    long_items = load_dev(args.long)
    long_results = {i.id: tagger.tag(i.title, i.text, i.language) for i in long_items}
    print(f"\nlong articles {args.long}")
    report("all languages", long_items, {k: topics_of(r) for k, r in long_results.items()})
    if args.errors:
        list_errors(long_items, long_results)

    where = pin_to_one_core()
    print(f"\nspeed of tag() on one core ({where}), best of {RUNS} runs")
    if args.corpus:
        docs, pages = corpus_docs(args.corpus)
        print(
            f"  corpus {args.corpus}: {pages} pages, {len(docs)} with extracted text "
            "(extraction not timed)"
        )
        print(speed_line("corpus articles", docs, args.min_seconds), flush=True)
        print(speed_line("corpus + 3 on-topic paragraphs", on_topic(docs, items), args.min_seconds))
        en = realistic_en(docs)
        print(speed_line("realistic on-topic articles (en)", en, args.min_seconds), flush=True)
    ar = realistic_ar()
    print(speed_line("realistic on-topic articles (ar)", ar, args.min_seconds), flush=True)
    long_docs = [Doc(i.title, i.text, i.language) for i in long_items]
    print(speed_line("long articles (en, ar)", long_docs, args.min_seconds), flush=True)
    dev_docs = [Doc(i.title, i.text, i.language) for i in items]
    print(speed_line("dev-set items", dev_docs, args.min_seconds), flush=True)
    print(speed_line("dense: 10 dev items per text", dense(items), args.min_seconds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
