"""bench/rating/copy_ab: where the COPY of rated rows into PostgreSQL spends its time,
A/B in one run on one durable server (the figures behind engine.write_rated's order and
migration 0002's dropped foreign keys).

    .venv/bin/python -m bench.rating.copy_ab [--records 200000]

Rates the bench's workload with the engine, writes the rated rows in file order, in
the order bossa writes them (account, start) and in record key order, and COPYs them
into rating.rated_usage (emptied between runs, so it does not show what a large index
costs; best of three): as migrated, in record key order, with the batch foreign key it
had, with a (batch, account, start) index instead of (account, start), with the primary
key only, and without any index (the floor on this machine).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench.common import ROOT, free_port
from bench.rating.run import subscriptions, tariffs, write_cdrs

sys.path.insert(0, str(ROOT))

from bossa.db import EmbeddedPostgres
from bossa.db.migrations import migrate
from bossa.rating.engine import RatingEngine
from bossa.rating.store import RATED_COLUMNS

_COPY = f"copy rating.rated_usage ({RATED_COLUMNS}) from stdin (format csv)"
_FK = (
    "alter table rating.rated_usage add constraint rated_usage_batch_id_fkey "
    "foreign key (batch_id) references rating.batches (id)"
)


def _copy(conn: psycopg.Connection, path: Path, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(_COPY) as copy:
            copy.write(path.read_bytes())
        conn.commit()
        best = min(best, time.perf_counter() - started)
        conn.execute("truncate rating.rated_usage")
        conn.commit()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    n = parser.parse_args().records
    rng = random.Random(14)
    versions = tariffs(rng)
    with tempfile.TemporaryDirectory(prefix="bossa-bench-copy-") as tmp:
        base = Path(tmp)
        write_cdrs(base / "cdrs.csv", n, n // 10, rng)
        engine = RatingEngine()
        engine.load_tariffs(versions)
        engine.put_subscriptions(subscriptions(n // 10))
        engine.stage_csv(base / "cdrs.csv")
        engine.rate()
        columns = (
            "account_id, msisdn, destination, product_code, zone, start, duration, billed, "
            "free, charge, allowance_used"
        )
        rows = f"select record_key, 1, {columns} from result where reason is null"  # noqa: S608
        engine.write_csv(rows, base / "file-order.csv")
        engine.write_csv(f"{rows} order by account_id, start", base / "index-order.csv")
        engine.write_csv(f"{rows} order by record_key", base / "key-order.csv")
        rated = engine.totals()[0]
        engine.close()
        pg = EmbeddedPostgres(base / "pg", port=free_port(), database="bossa", durable=True)
        pg.start()
        try:
            url = pg.url("bossa")
            migrate(url)
            with psycopg.connect(url) as conn:
                conn.execute(
                    "insert into rating.batches (source, sha256, created_by) "
                    "values ('copy_ab', 'copy_ab', 'bench')"
                )
                conn.commit()
                # As migrated: primary key, (account, start) index, no foreign key.
                figures = {"file order": _copy(conn, base / "file-order.csv")}
                figures["index order (as bossa writes)"] = _copy(conn, base / "index-order.csv")
                figures["record key order"] = _copy(conn, base / "key-order.csv")
                conn.execute(_FK)
                conn.commit()
                figures["index order, with the batch foreign key"] = _copy(
                    conn, base / "index-order.csv"
                )
                conn.execute(
                    "alter table rating.rated_usage drop constraint rated_usage_batch_id_fkey"
                )
                conn.execute("drop index rating.rated_usage_account")
                conn.execute(
                    "create index rated_usage_batch on rating.rated_usage "
                    "(batch_id, account_id, started_at)"
                )
                conn.commit()
                figures["index by (batch, account, start) instead"] = _copy(
                    conn, base / "index-order.csv"
                )
                conn.execute("drop index rating.rated_usage_batch")
                conn.commit()
                figures["primary key only"] = _copy(conn, base / "index-order.csv")
                conn.execute("alter table rating.rated_usage drop constraint rated_usage_pkey")
                conn.commit()
                figures["no index at all (the floor)"] = _copy(conn, base / "index-order.csv")
        finally:
            pg.stop()
    print(f"COPY of {rated:,} rated rows into rating.rated_usage (best of 3):")
    for name, seconds in figures.items():
        print(f"  {name}: {seconds:.2f} s, {rated / seconds:,.0f} rows/s")


if __name__ == "__main__":
    main()
