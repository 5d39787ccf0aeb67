"""Server-stack tests: a package, so that the shared stack is stopped once they are done, not at session end."""
