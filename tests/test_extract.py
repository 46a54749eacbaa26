"""Article extraction: saved pages beside their expectations, decoding, language, and the pool.

Each ``tests/data/extract/<name>.html`` is a page written for these tests, with the chrome news sites
put around (and inside) an article; ``<name>.expected.json`` says what the text must start and end
with, what it must contain and what it must not (the chrome), and the metadata.
"""

from __future__ import annotations

import codecs
import gzip
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from marsad.errors import ExtractionError
from marsad.extract import (
    MIN_TEXT_CHARS,
    ExtractedPage,
    ExtractorPool,
    decode_html,
    detect_language,
    extract_page,
    header_charset,
)

DATA = Path(__file__).parent / "data" / "extract"
CASES = sorted(path.name.removesuffix(".expected.json") for path in DATA.glob("*.expected.json"))


def page_bytes(name: str) -> bytes:
    return (DATA / f"{name}.html").read_bytes()


def expected(name: str) -> dict:
    return json.loads((DATA / f"{name}.expected.json").read_text(encoding="utf-8"))


def short_page(body: str = "<p>The council meets again on Tuesday.</p>") -> bytes:
    return (
        f"<html><head><title>Brief</title></head><body><article>{body}</article></body></html>"
    ).encode()


# --- saved pages -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_saved_page_gives_the_article_without_the_chrome(name: str) -> None:
    want = expected(name)
    page = extract_page(page_bytes(name), want["url"])

    assert page.status == want["status"], page.error
    assert page.method == "trafilatura"
    assert page.error is None
    assert page.text.startswith(want["first"]), page.text[:200]
    assert page.text.endswith(want["last"]), page.text[-200:]
    for sentence in want["present"]:
        assert sentence in page.text
    for chrome in want["absent"]:
        assert chrome not in page.text, chrome
    assert len(page.text) >= MIN_TEXT_CHARS


@pytest.mark.parametrize("name", CASES)
def test_saved_page_metadata(name: str) -> None:
    want = expected(name)
    page = extract_page(page_bytes(name), want["url"])

    assert page.title == want["title"]
    assert page.author == want["author"]
    assert page.site_name == want["site_name"]
    assert page.language == want["language"]
    assert page.published_at == datetime.fromisoformat(want["published_at"])
    assert page.published_at.tzinfo is not None
    assert page.published_at.utcoffset() == timedelta(0)


def test_closing_sentences_that_merely_sound_like_chrome_are_kept() -> None:
    body = "".join(
        f"<p>{sentence}</p>"
        for sentence in [
            (
                "Negotiators from both governments met in Amman for a third round of talks on"
                " Sunday, and officials described the atmosphere as constructive but cautious."
            ),
            (
                "The draft under discussion would let border guards pursue smugglers a few"
                " kilometres into the other country when both sides agree in advance."
            ),
            "Damascus is expected to sign up to the agreement next month.",
            "The interior ministry said it would follow up on the remaining questions.",
        ]
    )
    page = extract_page(short_page(body))
    assert page.status == "ok"
    assert page.text.endswith(
        "Damascus is expected to sign up to the agreement next month.\n"
        "The interior ministry said it would follow up on the remaining questions."
    )


def test_language_comes_from_the_text_not_the_markup() -> None:
    html = page_bytes("inline-chrome-arabic")
    assert b'<html lang="en">' in html and b'content-language" content="en"' in html
    assert extract_page(html).language == "ar"


def test_a_date_without_offset_is_taken_as_utc() -> None:
    page = extract_page(page_bytes("inline-chrome-english"))
    assert page.published_at == datetime(2025, 2, 3, 16, 20, tzinfo=UTC)


def test_an_offset_is_converted_to_utc() -> None:
    page = extract_page(page_bytes("inline-chrome-arabic"))
    assert page.published_at == datetime(2025, 1, 19, 7, 30, tzinfo=UTC)
    assert page.published_at.tzinfo is UTC


# --- decoding ----------------------------------------------------------------------------------


def test_declared_legacy_charset_is_honoured() -> None:
    utf8 = page_bytes("inline-chrome-arabic")
    legacy = utf8.decode("utf-8").replace('charset="utf-8"', 'charset="windows-1256"')
    encoded = legacy.encode("cp1256")
    with pytest.raises(UnicodeDecodeError):
        encoded.decode("utf-8")  # so the declaration, not a UTF-8 guess, must be what decodes it

    assert extract_page(encoded).text == extract_page(utf8).text


def test_http_equiv_charset_is_honoured() -> None:
    html = (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1256">'
        "</head><body><p>قال المتحدث إن الدوريات مستمرة.</p></body></html>"
    )
    assert "قال المتحدث" in decode_html(html.encode("cp1256"))


@pytest.mark.parametrize(
    "bom, encoding",
    [
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
    ],
)
def test_byte_order_mark_wins(bom: bytes, encoding: str) -> None:
    html = page_bytes("inline-chrome-arabic").decode("utf-8")
    html = html.replace('<meta charset="utf-8">', "")
    page = extract_page(bom + html.encode(encoding))
    assert page.status == "ok"
    assert page.text == extract_page(page_bytes("inline-chrome-arabic")).text


def test_a_wrong_declaration_falls_back_to_detection() -> None:
    utf8 = page_bytes("inline-chrome-arabic")
    mislabelled = utf8.decode("utf-8").encode("cp1256")  # still says charset="utf-8"
    assert b'charset="utf-8"' in mislabelled
    assert extract_page(mislabelled).text == extract_page(utf8).text


def test_undeclared_utf8_is_read_as_utf8() -> None:
    html = page_bytes("theme-english").replace(b'<meta charset="UTF-8">', b"")
    assert "“We have been looking" in extract_page(html).text


def test_gzip_bytes_are_refused_with_a_clear_status() -> None:
    page = extract_page(gzip.compress(page_bytes("theme-english")))
    assert page.status == "failed"
    assert page.text == ""
    assert "gzip" in str(page.error) and "Content-Encoding" in str(page.error)


@pytest.mark.parametrize(
    "data, kind",
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "PDF"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00", "PNG"),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00", "ZIP"),
        (random.Random(7).randbytes(20_000), "binary"),
    ],
    ids=["pdf", "png", "zip", "random"],
)
def test_binary_bytes_are_refused(data: bytes, kind: str) -> None:
    page = extract_page(data)
    assert page.status == "failed"
    assert page.text == ""
    assert kind in str(page.error)


def test_decode_html_raises_a_typed_error() -> None:
    with pytest.raises(ExtractionError) as caught:
        decode_html(gzip.compress(b"<html></html>"))
    assert caught.value.reason == "compressed"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   \n\t ",
        "",
        b"<",
        b"<<<<>>>>" * 100,
        b"<html>",
        b"<html><body></body></html>",
        b"plain text, no markup at all",
        b"<?xml version='1.0' encoding='utf-8'?><html><body><p>x</p></body></html>",
        "<?xml version='1.0' encoding='utf-8'?><html><body><p>x</p></body></html>",
        b"<html><body>" + b"<div>" * 5000 + b"deep" + b"</div>" * 5000 + b"</body></html>",
        b"<html><head><meta charset='no-such-charset'></head><body><p>caf\xe9</p></body></html>",
        b"\xff\xfe\x00",
    ],
    ids=lambda data: repr(data[:24]),
)
def test_extract_page_never_raises(data: bytes | str) -> None:
    page = extract_page(data, "https://example.org/x")
    assert isinstance(page, ExtractedPage)
    assert page.status in {"ok", "too_short", "empty", "failed"}
    assert page.status != "ok" or page.text


# --- short and empty pages ---------------------------------------------------------------------


def test_short_text_is_too_short_and_kept() -> None:
    page = extract_page(short_page(), "https://example.org/brief")
    assert page.status == "too_short"
    assert page.text == "The council meets again on Tuesday."
    assert len(page.text) < MIN_TEXT_CHARS
    assert str(MIN_TEXT_CHARS) in str(page.error)


def test_empty_input_is_empty() -> None:
    assert extract_page(b"").status == "empty"
    assert extract_page(b" \n ").status == "empty"


def test_page_without_article_is_not_ok() -> None:
    html = b"""<html><head><title>Index</title></head><body>
    <nav><a href="/">Home</a> <a href="/news/">News</a> <a href="/about/">About</a></nav>
    <footer><a href="/privacy/">Privacy Policy</a></footer></body></html>"""
    page = extract_page(html)
    assert page.status in {"empty", "too_short"}
    assert page.title == "Index"


# --- language ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, language",
    [
        ("The interior ministry said the patrols would continue along the northern border.", "en"),
        (
            "قالت وزارة الداخلية إن الدوريات ستستمر على طول الحدود الشمالية خلال الأسابيع المقبلة.",
            "ar",
        ),
        # Arabic prose with Latin acronyms and digits, as news copy often is.
        (
            "أعلن التحالف الدولي ضد ISIS أن 15 مستودعاً للأسلحة دُمّرت في عملية مشتركة مع CENTCOM.",
            "ar",
        ),
        ("وزارت کشور اعلام کرد که گشت‌زنی در امتداد مرزهای شمالی ادامه خواهد داشت.", "fa"),
        (
            "Le ministère de l'Intérieur a déclaré que les patrouilles se poursuivraient à la frontière.",
            "fr",
        ),
        ("ok", None),
        ("2025-03-14 07:45 — 12 / 7", None),
        ("", None),
    ],
)
def test_detect_language(text: str, language: str | None) -> None:
    assert detect_language(text) == language


# --- pool --------------------------------------------------------------------------------------

POOL_TIMEOUT = 2.0
POOL_MAX_BYTES = 3_000_000


def pathological_page() -> bytes:
    """Legal HTML, under the size limit, that keeps trafilatura busy far beyond the timeout
    (about 30 s on one core here): one block of 50,000 links and words."""
    html = (
        "<html><body><div>"
        + "<a href='/x'>link text here</a> plain words and more " * 50_000
        + "</div></body></html>"
    ).encode()
    assert len(html) < POOL_MAX_BYTES
    return html


@pytest.fixture(scope="module")
def pool() -> Iterator[ExtractorPool]:
    with ExtractorPool(workers=2, timeout=POOL_TIMEOUT, max_bytes=POOL_MAX_BYTES) as extractor:
        yield extractor


def test_pool_keeps_the_order_and_matches_extract_page(pool: ExtractorPool) -> None:
    pages = [
        ("https://rafidain-today.example/a", page_bytes("inline-chrome-arabic")),
        (None, short_page()),
        ("https://levant-ledger.example/b", page_bytes("theme-english")),
        (None, gzip.compress(page_bytes("theme-english"))),
        ("https://tigris-wire.example/c", page_bytes("inline-chrome-english")),
        (None, b""),
    ]
    results = pool.extract_many(pages)

    assert [r.status for r in results] == ["ok", "too_short", "ok", "failed", "ok", "empty"]
    assert [r.language for r in results] == ["ar", "en", "en", None, "en", None]
    for (url, html), result in zip(pages, results):
        assert result == extract_page(html, url)


def test_pool_refuses_a_page_over_the_size_limit_without_parsing(pool: ExtractorPool) -> None:
    huge = b"<html><body>" + b"<p>word</p>" * (POOL_MAX_BYTES // 11 + 1) + b"</body></html>"
    results = pool.extract_many([(None, page_bytes("theme-english")), ("https://x.example/", huge)])

    assert [r.status for r in results] == ["ok", "too_large"]
    assert str(POOL_MAX_BYTES) in str(results[1].error)
    assert results[1].text == ""


def test_pool_kills_a_stuck_page_and_keeps_working(pool: ExtractorPool) -> None:
    results = pool.extract_many(
        [
            ("https://slow.example/", pathological_page()),
            ("https://levant-ledger.example/b", page_bytes("theme-english")),
        ]
    )
    assert [r.status for r in results] == ["timeout", "ok"]
    assert "2 s" in str(results[0].error)

    after = pool.extract_many([(None, page_bytes(name)) for name in CASES])
    assert [r.status for r in after] == ["ok"] * len(CASES)


def test_pool_with_no_pages() -> None:
    with ExtractorPool(workers=1) as extractor:
        assert extractor.extract_many([]) == []
        assert extractor.workers == 1


def test_pool_defaults_to_one_worker_per_core() -> None:
    import os

    assert ExtractorPool().workers == os.cpu_count()


def test_the_http_header_charset_decodes_a_page_that_declares_none() -> None:
    html = (
        "<html><body><p>قال المتحدث إن الدوريات المشتركة مستمرة على طول الحدود.</p></body></html>"
    ).encode("cp1256")
    assert "قال المتحدث" in decode_html(html, "text/html; charset=windows-1256")
    assert header_charset('text/html; Charset="ISO-8859-1"') == "cp1252"  # as browsers read it
    assert header_charset("text/html; charset=no-such-charset") is None


def test_utf8_bytes_win_over_a_wrong_header_charset() -> None:
    html = "<html><body><p>دوريات مشتركة على الحدود</p></body></html>".encode()
    assert "دوريات مشتركة" in decode_html(html, "text/html; charset=iso-8859-1")
