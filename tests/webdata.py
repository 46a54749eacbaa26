"""Feeds and article pages written for the tests, with the page chrome real news sites carry."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape


@dataclass(frozen=True)
class Item:
    title: str
    link: str
    guid: str | None = None
    summary: str = ""
    pub_date: str | None = "Mon, 09 Nov 2026 09:15:00 +0000"


def rss(title: str, items: list[Item], language: str = "en") -> bytes:
    entries = []
    for item in items:
        parts = [f"<title>{escape(item.title)}</title>", f"<link>{escape(item.link)}</link>"]
        if item.guid:
            parts.append(f'<guid isPermaLink="false">{escape(item.guid)}</guid>')
        if item.summary:
            parts.append(f"<description>{escape(item.summary)}</description>")
        if item.pub_date:
            parts.append(f"<pubDate>{item.pub_date}</pubDate>")
        entries.append("<item>" + "".join(parts) + "</item>")
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        f"<title>{escape(title)}</title><link>http://127.0.0.1/</link><language>{language}</language>"
        + "".join(entries)
        + "</channel></rss>"
    ).encode()


CHROME = ("Show More", "Related Articles", "Back to top button", "Subscribe to our newsletter")


def article_page(
    title: str,
    paragraphs: list[str],
    *,
    lang: str = "en",
    published: str = "2026-11-09T09:00:00+00:00",
    author: str = "Rana Haddad",
    site: str = "Frontier Wire",
) -> bytes:
    body = "\n".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    direction = ' dir="rtl"' if lang == "ar" else ""
    return f"""<!doctype html>
<html lang="{lang}"{direction}>
<head>
<meta charset="utf-8">
<title>{escape(title)} | {escape(site)}</title>
<meta property="og:site_name" content="{escape(site)}">
<meta property="og:title" content="{escape(title)}">
<meta name="author" content="{escape(author)}">
<meta property="article:published_time" content="{published}">
</head>
<body>
<header><nav><a href="/">Home</a> <a href="/politics">Politics</a> <a href="/security">Security</a>
<a href="/search">Search</a></nav></header>
<div class="cookie-banner">We use cookies to improve your experience. Accept all cookies</div>
<main>
<article>
<div class="category"><a href="/policy">Policy</a></div>
<h1>{escape(title)}</h1>
<div class="byline">By {escape(author)} · <time datetime="{published}">{published[:10]}</time></div>
<div class="share"><a href="#">Share on X</a> <a href="#">Facebook</a> <a href="#">WhatsApp</a></div>
<div class="article-body">
{body}
</div>
<button class="show-more">Show More</button>
</article>
<aside class="related"><h2>Related Articles</h2><ul>
<li><a href="/a">Ministers discuss grain prices at regional summit</a></li>
<li><a href="/b">Football: derby ends in a draw after late goal</a></li></ul></aside>
<div class="newsletter"><h3>Subscribe to our newsletter</h3><form><input type="email"></form></div>
</main>
<footer><a href="#top">Back to top button</a><p>© 2026 {escape(site)}. All rights reserved.</p></footer>
</body>
</html>""".encode()


ENGLISH_PARAGRAPHS = [
    "Security forces in eastern Syria detained four suspected members of an Islamic State cell "
    "on Sunday after a week of surveillance near the town of Mayadin, officials said.",
    "The suspects were accused of planting roadside bombs along the desert highway and of "
    "collecting money from local traders under threat, according to a statement from the "
    "provincial security committee.",
    "Residents said the raid lasted several hours and that weapons and explosives were seized "
    "from two houses on the edge of the town. No casualties were reported among the forces.",
    "Analysts say ISIS cells have exploited gaps in control across the Badia desert to rebuild "
    "small networks, relying on extortion and hit-and-run attacks rather than holding ground.",
]

ARABIC_PARAGRAPHS = [
    "أعلنت وزارة الداخلية العراقية أن وفدا أمنيا رفيعا زار عمّان لبحث تعزيز التنسيق مع الأردن "
    "في مجال ضبط الحدود وتبادل المعلومات الاستخبارية حول خلايا تنظيم داعش.",
    "وقال مسؤول في الوزارة إن الجانبين اتفقا على إنشاء غرفة عمليات مشتركة لمتابعة تحركات "
    "المهربين والمسلحين على طول الحدود الصحراوية بين البلدين.",
    "وأضاف أن الاجتماع تناول أيضا ملف المحتجزين في مخيم الهول وسبل منع عودة التنظيم إلى "
    "المناطق الحدودية، مشيرا إلى أن دوريات مشتركة ستبدأ خلال الأسابيع المقبلة.",
    "ويأتي هذا الاتفاق بعد سلسلة لقاءات بين قادة الأجهزة الأمنية في البلدين خلال الأشهر "
    "الماضية، في إطار جهود إقليمية أوسع لمكافحة الإرهاب.",
]
