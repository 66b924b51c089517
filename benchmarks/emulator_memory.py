"""Peak memory of the emulator server while it takes a 50,000-line batch end to end.

Starts ``python -m openai_batches.emulator`` in a subprocess, uploads a 50,000-line batch
(``--big`` pads the lines to about 200 MB), runs it to completion, streams the output file
back, and prints the server's peak RSS (``VmHWM``) next to the file sizes, as ratios. A
server that streamed nothing would need at least the file size; this one should stay flat.

    .venv/bin/python benchmarks/emulator_memory.py [--lines 50000] [--big]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HEADERS = {"Authorization": "Bearer sk-bench"}


def status_kb(pid: int, field: str) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith(field + ":"):
            return int(row.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def write_input(path: Path, lines: int, big: bool) -> None:
    # ~200 MB / 50,000 lines is ~4,000 bytes of prompt per line.
    pad = "lorem ipsum " * 325 if big else ""
    with path.open("w") as fh:
        for i in range(lines):
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"Summarise item {i}. {pad}"}],
            }
            fh.write(
                json.dumps(
                    {
                        "custom_id": f"req-{i}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": body,
                    }
                )
                + "\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--big", action="store_true", help="pad the input to about 200 MB")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="emu-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        src = Path(tmp) / "input.jsonl"
        write_input(src, args.lines, args.big)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "openai_batches.emulator",
                "--port",
                "0",
                "--timing",
                "instant",
                "--data-dir",
                str(data_dir),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            base = proc.stdout.readline().strip()
            idle_kb = status_kb(proc.pid, "VmRSS")
            with httpx.Client(base_url=base, headers=HEADERS, timeout=600) as client:
                t0 = time.monotonic()
                with src.open("rb") as fh:
                    up = client.post(
                        "/files", files={"file": ("input.jsonl", fh)}, data={"purpose": "batch"}
                    )
                up.raise_for_status()
                t_upload = time.monotonic() - t0
                batch = client.post(
                    "/batches",
                    json={
                        "input_file_id": up.json()["id"],
                        "endpoint": "/v1/chat/completions",
                        "completion_window": "24h",
                    },
                ).json()
                t0 = time.monotonic()
                while batch["status"] not in ("completed", "failed", "expired", "cancelled"):
                    time.sleep(0.2)
                    batch = client.get(f"/batches/{batch['id']}").json()
                t_run = time.monotonic() - t0
                assert batch["status"] == "completed", batch
                out_bytes = out_lines = 0
                t0 = time.monotonic()
                with client.stream("GET", f"/files/{batch['output_file_id']}/content") as r:
                    r.raise_for_status()
                    for chunk in r.iter_bytes():
                        out_bytes += len(chunk)
                        out_lines += chunk.count(b"\n")
                t_download = time.monotonic() - t0
            peak_kb = status_kb(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    in_bytes = src_size = up.json()["bytes"]
    mb = 1024 * 1024
    print(f"lines:                {args.lines:,} in, {out_lines:,} out")
    print(f"input file:           {in_bytes / mb:8.1f} MB (upload {t_upload:.1f} s)")
    print(
        f"output file:          {out_bytes / mb:8.1f} MB (run {t_run:.1f} s, "
        f"download {t_download:.1f} s)"
    )
    print(f"server RSS idle:      {idle_kb / 1024:8.1f} MB")
    print(f"server peak RSS:      {peak_kb / 1024:8.1f} MB (VmHWM)")
    print(f"peak RSS / output:    {peak_kb * 1024 / out_bytes:8.2f}x")
    print(f"peak RSS / input:     {peak_kb * 1024 / src_size:8.2f}x")
    print(f"(peak - idle) / output: {(peak_kb - idle_kb) * 1024 / out_bytes:6.2f}x")


if __name__ == "__main__":
    main()
