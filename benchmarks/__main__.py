"""Entry point for ``python -m benchmarks`` (see README.md)."""

from benchmarks.cli import main

raise SystemExit(main())
