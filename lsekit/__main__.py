"""Entry point for ``python -m lsekit``."""

if __name__ == "__main__":
    from ._cli import main

    raise SystemExit(main())
