"""Entry point of ``python -m ska_tango_scheduler.demo``."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
