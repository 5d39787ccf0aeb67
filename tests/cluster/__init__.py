"""Ray cluster tests: a package, so that their cluster is stopped once they are done, not at session end."""
