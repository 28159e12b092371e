"""Entry point: ``python -m benchmarks [--quick] [--out DIR] [--only NAME ...]``."""

from benchmarks.run import main

raise SystemExit(main())
