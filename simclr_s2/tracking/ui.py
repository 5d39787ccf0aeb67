"""Where a person sees a run: the tracking server's own UI, or `mlflow ui` over a local store."""

from __future__ import annotations

LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def ui_base(tracking_uri: str) -> str:
    """The MLflow UI's address for runs of `tracking_uri`."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else LOCAL_UI


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    return f"{ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}"


def version_url(tracking_uri: str, model: str, version: str) -> str:
    return f"{ui_base(tracking_uri)}/#/models/{model}/versions/{version}"


def how_to_browse(tracking_uri: str) -> str:
    """The command that shows a local store in a browser, or nothing to run for a server."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {ui_base(tracking_uri)}"
    return f"mlflow ui --backend-store-uri {tracking_uri}, then open {LOCAL_UI}"
