"""The application layer: the context a command runs in, one spec per entry point (from which the CLI,
MLproject and the manual's parameter tables are built), and the boundary that turns errors into one line."""
