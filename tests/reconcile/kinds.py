"""Registers the ``public_ip`` reconciler and its operations' factories.

For ``flowkit reconcile --import tests.reconcile.kinds`` and ``flowkit resources set-target ... --import ...``.
"""

from __future__ import annotations

import tests.reconcile.flows  # noqa: F401  (the factories)
from flowkit.reconcile import register
from tests.reconcile.conftest import public_ip

RECONCILER = register(public_ip())
