"""How fast the emulator lists 1,000 batches, against the cost of one trivial request.

Run: ``python benchmarks/emulator_listing.py``. Prints the time to list 1,000 batches through
the official SDK (10 pages of 100) and to fetch 200 pages by cursor, each as a ratio of the
time one ``GET /_emulator/health`` round trip takes in the same run, so the numbers mean the
same on a fast or a slow machine.
"""

from __future__ import annotations

import time

import httpx
from openai import OpenAI

from openai_batches.emulator import Emulator, EmulatorServer

N = 1000


def main() -> None:
    emu = Emulator(timing="instant")
    file = emu.add_file(
        b'{"custom_id":"a","method":"POST","url":"/v1/moderations","body":{"input":"x"}}\n'
    )
    for _ in range(N):
        emu.create_batch(
            {"input_file_id": file["id"], "endpoint": "/v1/moderations", "completion_window": "24h"}
        )
    emu.tick()
    with EmulatorServer(emu, port=0) as server:
        client = OpenAI(base_url=server.base_url, api_key="sk-bench")
        with httpx.Client() as http:
            start = time.perf_counter()
            for _ in range(50):
                http.get(f"{server.root_url}/_emulator/health")
            trivial = (time.perf_counter() - start) / 50
        start = time.perf_counter()
        ids = [b.id for b in client.batches.list(limit=100)]
        full = time.perf_counter() - start
        assert len(ids) == N
        start = time.perf_counter()
        for _ in range(200):
            client.batches.list(limit=100, after=ids[N // 2])
        pages = (time.perf_counter() - start) / 200
    emu.close()
    print(f"one trivial request:            {trivial * 1000:8.2f} ms")
    print(
        f"list {N} batches (10 pages):    {full * 1000:8.2f} ms  = {full / trivial:6.1f}x a trivial request"
    )
    print(
        f"one page of 100 by cursor:      {pages * 1000:8.2f} ms  = {pages / trivial:6.1f}x a trivial request"
    )


if __name__ == "__main__":
    main()
