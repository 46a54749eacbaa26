"""Story clusters: the cost of placing a new article, with thousands stored.

    python benchmarks/clusters.py [--stored 3000] [--batch 50] [--batches 8] [--backend both]

Generates stories from a made-up vocabulary (sentences with names, places and numbers, 120-600
words), stores ``--stored`` of them within one window and places them (untimed), then times
``assign_clusters`` on ``--batches`` batches of ``--batch`` new articles, each batch rolled back
so every run sees the same database. A new batch mixes what the ingest meets:

- 40 % new stories, sharing nothing but vocabulary with the stored ones;
- 25 % copies of a stored story under another outlet's dateline and sign-off;
- 15 % copies of a stored story's first half (a shortened re-publication);
- 20 % templated releases: a stored story with two in five of its names and numbers replaced
  (the same boilerplate about another event, Jaccard ~0.6-0.8 with it), which must not join.

Only articles whose signature matches a stored one reach the fact check (marsad.clusters,
"Templated releases"), so the mix, 60 % of them, weighs on it more than most ingest runs do.
Prints, per backend, the wall time per article and the part of it spent in this process's CPU
(medians of three runs; the CPU figure is the steadier on a shared machine), and how many of
each kind joined a stored cluster. Without
``--postgres`` a scratch database is created on MARSAD_TEST_POSTGRES_URL's server (default
127.0.0.1:5432) and dropped after.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, bindparam, insert, update  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from marsad.clusters import ClusterItem, assign_clusters  # noqa: E402
from marsad.db import make_engine, session_scope, upgrade  # noqa: E402
from models import Article  # noqa: E402
from _scratch import scratch_postgres  # noqa: E402

T0 = datetime(2026, 11, 9, 8, 0, tzinfo=UTC)
KINDS = ("new", "copy", "half", "template")
WEIGHTS = (40, 25, 15, 20)


def _vocabulary(rng: random.Random) -> tuple[list[str], list[str]]:
    letters = "abcdefghijklmnoprstuvwy"

    def word(shortest: int, longest: int) -> str:
        return "".join(rng.choice(letters) for _ in range(rng.randint(shortest, longest)))

    words = sorted({word(2, 9) for _ in range(4000)})
    names = sorted({word(4, 8).capitalize() for _ in range(600)})
    return words, names


def _story(rng: random.Random, words: list[str], names: list[str]) -> str:
    sentences = []
    for _ in range(rng.randint(6, 30)):
        sentence = [rng.choice(words).capitalize()]
        for _ in range(rng.randint(10, 24)):
            roll = rng.random()
            if roll < 0.08:
                sentence.append(rng.choice(names))
            elif roll < 0.11:
                sentence.append(str(rng.randint(2, 5000)))
            else:
                sentence.append(rng.choice(words))
        sentences.append(" ".join(sentence) + ".")
    return " ".join(sentences)


def _variant(rng: random.Random, kind: str, story: str, names: list[str]) -> str:
    if kind == "copy":
        dateline = f"{rng.choice(names).upper()} ({rng.choice(names)} Post) —"
        return f"{dateline} {story} Read more on our site."
    if kind == "half":
        return story[: len(story) // 2].rsplit(".", 1)[0] + "."
    tokens = story.split(" ")  # template: the same boilerplate, other names and numbers
    for n, token in enumerate(tokens):
        if rng.random() > 0.4:  # a release keeps most of its names: the unit, the group, the region
            continue
        if n and token[:1].isupper() and not tokens[n - 1].endswith("."):
            tokens[n] = rng.choice(names) + token[len(token.rstrip(".")):]
        elif token.rstrip(".").isdigit():
            tokens[n] = str(rng.randint(2, 5000)) + token[len(token.rstrip(".")):]
    return " ".join(tokens)


def run(label: str, engine: Engine, args: argparse.Namespace) -> None:
    rng = random.Random(7)
    words, names = _vocabulary(rng)
    stored = [_story(rng, words, names) for _ in range(args.stored)]
    with session_scope(engine) as session:
        ids = [row.id for row in session.execute(insert(Article).returning(Article.id), [
            {"canonical_url": f"https://stored.example/{n}", "url": f"https://stored.example/{n}",
             "text": story, "published_at": T0 + timedelta(minutes=n), "discovered_at": T0,
             "story_at": T0 + timedelta(minutes=n)}
            for n, story in enumerate(stored)
        ])]
        for start in range(0, len(ids), 200):
            chunk = range(start, min(start + 200, len(ids)))
            items = [ClusterItem(ids[n], stored[n], T0 + timedelta(minutes=n)) for n in chunk]
            _write(session, assign_clusters(session, items))

    batches = []
    when = T0 + timedelta(days=1)
    for _ in range(args.batches):
        batch_kinds = rng.choices(KINDS, WEIGHTS, k=args.batch)
        texts = [_story(rng, words, names) if kind == "new"
                 else _variant(rng, kind, rng.choice(stored), names) for kind in batch_kinds]
        batches.append((batch_kinds, texts))
    with session_scope(engine) as session:
        rows = [{"canonical_url": f"https://new.example/{b}/{n}", "url": "https://new.example/",
                 "text": None, "published_at": when, "discovered_at": when, "story_at": when}
                for b, (kinds, _) in enumerate(batches) for n in range(len(kinds))]
        new_ids = [row.id for row in session.execute(insert(Article).returning(Article.id), rows)]

    timings: list[float] = []
    cpu_timings: list[float] = []
    joined: dict[str, list[int]] = {kind: [0, 0] for kind in KINDS}
    for attempt in range(3):
        elapsed = cpu = 0.0
        offset = 0
        for kinds, texts in batches:
            items = [ClusterItem(new_ids[offset + n], t, when) for n, t in enumerate(texts)]
            offset += len(texts)
            with engine.connect() as connection, Session(connection) as session:
                start, start_cpu = time.perf_counter(), time.process_time()
                placed = assign_clusters(session, items)
                elapsed += time.perf_counter() - start
                cpu += time.process_time() - start_cpu
                session.rollback()
            if attempt == 0:
                for kind, item in zip(kinds, items, strict=True):
                    joined[kind][0] += placed[item.article_id]["cluster_id"] != item.article_id
                    joined[kind][1] += 1
        timings.append(elapsed * 1000 / len(new_ids))
        cpu_timings.append(cpu * 1000 / len(new_ids))
    runs = ", ".join(f"{t:.2f}" for t in timings)
    print(f"{label}: {statistics.median(timings):.2f} ms per article, "
          f"{statistics.median(cpu_timings):.2f} ms of it this process's CPU "
          f"(runs {runs}; {args.stored} stored, batches of {args.batch})")
    counts = ", ".join(f"{kind} {j}/{n}" for kind, (j, n) in joined.items())
    print(f"  joined a stored cluster: {counts}")


def _write(session: Session, placed: dict[int, dict[str, Any]]) -> None:
    session.execute(
        update(Article.__table__).where(Article.__table__.c.id == bindparam("aid")).values(
            cluster_id=bindparam("cid"), minhash=bindparam("mh"), shingle_count=bindparam("sc")),
        [{"aid": a, "cid": v["cluster_id"], "mh": v["minhash"], "sc": v["shingle_count"]}
         for a, v in placed.items()],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stored", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--postgres", help="PostgreSQL URL to use; default: a scratch database")
    parser.add_argument("--backend", choices=("both", "sqlite", "postgresql"), default="both")
    args = parser.parse_args()
    if args.backend in ("both", "sqlite"):
        with tempfile.TemporaryDirectory() as scratch:
            engine = make_engine(f"sqlite:///{scratch}/clusters.db")
            upgrade(engine)
            run("SQLite", engine, args)
            engine.dispose()
    if args.backend in ("both", "postgresql"):
        if args.postgres:
            engine = make_engine(args.postgres)
            upgrade(engine)
            run("PostgreSQL", engine, args)
            return
        with scratch_postgres("marsad_bench_clusters") as engine:
            upgrade(engine)
            run("PostgreSQL", engine, args)


if __name__ == "__main__":
    main()
