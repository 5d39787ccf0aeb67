"""The bottom floor of the application: every entry point's settings (specs) and the run context.
Imports nothing above it."""
