"""The service in the convergence test: create resources, then change their targets at random.

``python -m tests.reconcile.churn URL RUN COUNT SECONDS SEED OUT``: creates
COUNT ``public_ip`` resources named ``RUN-<n>``, then for SECONDS sets random
targets (create, provision, delete, back again), each call its own
transaction, and writes ``{id: last target}`` to OUT as JSON.
"""

from __future__ import annotations

import json
import random
import sys
import time

from flowkit.reconcile import Resources
from tests.reconcile import kinds  # noqa: F401  (registers public_ip)

STATES = ("absent", "detached", "attached")


def main(url: str, run: str, count: int, seconds: float, seed: int, out: str) -> None:
    rng = random.Random(seed)
    targets: dict[str, str] = {}
    with Resources(url) as resources:
        for n in range(count):
            resource_id = "%s-%d" % (run, n)
            targets[resource_id] = rng.choice(STATES)
            resources.create("public_ip", resource_id, target=targets[resource_id])
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            resource_id = rng.choice(sorted(targets))
            targets[resource_id] = rng.choice(STATES)
            resources.set_target("public_ip", resource_id, targets[resource_id])
            # Paced like API calls, not a write loop: the conductors need the database too.
            time.sleep(rng.uniform(0.005, 0.03))
    with open(out, "w") as f:
        json.dump(targets, f)


if __name__ == "__main__":
    url, run, count, seconds, seed, out = sys.argv[1:]
    main(url, run, int(count), float(seconds), int(seed), out)
