"""A claimer process for test_race: claims and consumes jobs until the board is empty.

Usage: python -m tests.jobs.race_child WORKER_NAME CONF_JSON
Prints ``ready`` and waits for a line on stdin; claims one job, prints ``holding`` and waits
for another line (so every process provably holds a claim at the same moment); then
claims and consumes until the board is empty.  Prints one line per job it consumed:
``<uuid> <token>``.
"""

from __future__ import annotations

import json
import sys

from flowkit import exceptions as exc
from flowkit.jobs import backends


def main() -> None:
    who, conf = sys.argv[1], json.loads(sys.argv[2])
    board = backends.fetch(conf.pop("name"), conf)
    board.connect()
    # Start together: say ready, then wait for the parent's go (one line on stdin).
    print("ready", flush=True)
    sys.stdin.readline()
    held = False
    try:
        while True:
            try:
                jobs = list(board.wait(timeout=0.5))
            except exc.NotFound:
                if board.job_count == 0:
                    return
                continue
            for job in jobs:
                try:
                    claim = board.claim(job, who, ttl=60)
                except exc.UnclaimableJob:
                    continue
                if not held:
                    held = True
                    print("holding", flush=True)
                    sys.stdin.readline()
                board.consume(job, who, token=claim.token)
                print(job.uuid, claim.token, flush=True)
    finally:
        board.close()


if __name__ == "__main__":
    main()
