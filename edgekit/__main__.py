"""`python -m edgekit` runs the CLI."""

from edgekit.cli import main

if __name__ == "__main__":
    main()
