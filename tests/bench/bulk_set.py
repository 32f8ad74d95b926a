"""The "bulk stock set" scenario of `make bench`: rows per second of POST /api/v1/stock/levels/bulk
through the real gunicorn (batches of 1,000 rows, one client, one after another), against the same
batches run as set-based SQL straight through psql (floors/bulk_set.sql) in one session."""

from __future__ import annotations

import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

ROWS_PER_BATCH = 1_000
FLOOR_SQL = Path(__file__).resolve().parent / "floors" / "bulk_set.sql"


@dataclass
class BulkSetRun:
    batches: int
    seconds: float
    floor_seconds: float

    @property
    def rows(self) -> int:
        return self.batches * ROWS_PER_BATCH

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def floor_rows_per_second(self) -> float:
        return self.rows / self.floor_seconds if self.floor_seconds else 0.0

    def as_json(self) -> dict:
        return dict(
            asdict(self), rows_per_second=self.rows_per_second, floor_rows_per_second=self.floor_rows_per_second
        )


def batch_rows(batch: int, products: int) -> list[dict]:
    """What floors/bulk_set.sql sets for `batch`: the MAIN level of 1,000 consecutive bench SKUs."""
    return [
        {
            "sku": f"SKU-{(batch * ROWS_PER_BATCH + g) % products + 1:05d}",
            "warehouse": "MAIN",
            "on_hand": 10_000_001 + batch,
        }
        for g in range(ROWS_PER_BATCH)
    ]


def run(port: int, api_key: str, *, batches: int, products: int, floor_url: str, tmp: Path) -> BulkSetRun:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}", "X-Forwarded-Proto": "https"}
    bodies = [{"rows": batch_rows(b, products), "reference": "bench-bulk"} for b in range(batches)]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120) as client:
        warm_rows = [dict(row, on_hand=10_000_000) for row in batch_rows(0, products)[:10]]  # the seeded units
        warm = client.post("/api/v1/stock/levels/bulk", json={"rows": warm_rows},
                           headers={"Idempotency-Key": uuid.uuid4().hex})  # fmt: skip
        warm.raise_for_status()
        started = time.perf_counter()
        for body in bodies:
            response = client.post(
                "/api/v1/stock/levels/bulk", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
            )
            if response.status_code != 200 or response.json()["updated"] != ROWS_PER_BATCH:
                raise RuntimeError(f"bulk set answered {response.status_code}: {response.text[:300]}")
        seconds = time.perf_counter() - started
    driver = tmp / "bulk_set_floor.sql"
    driver.write_text("".join(f"\\set batch {b}\n\\i {FLOOR_SQL}\n" for b in range(batches)))
    started = time.perf_counter()
    subprocess.run(
        ["psql", floor_url, "-q", "-v", "actor=NULL", "-v", f"products={products}", "-f", str(driver)],
        stdout=subprocess.DEVNULL, check=True, timeout=3600,
    )  # fmt: skip
    return BulkSetRun(batches, seconds, time.perf_counter() - started)


def report(run: BulkSetRun) -> str:
    return "\n".join(
        [
            "| bulk stock set | rows | rows/s | psql floor rows/s | ratio to floor |",
            "|---|---:|---:|---:|---:|",
            f"| {run.batches} batches of {ROWS_PER_BATCH} rows | {run.rows} | {run.rows_per_second:,.0f}"
            f" | {run.floor_rows_per_second:,.0f} | {run.rows_per_second / run.floor_rows_per_second:.2f} |",
        ]
    )
