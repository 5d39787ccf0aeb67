# The local tracking stack (scripts/server.py); the Makefile includes this file.
# `make server AUTH=1` starts mlflow with basic auth (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD).
# Ports, credentials and the state folder come from the environment: see `python scripts/server.py -h`
# and docker/.env.example.
SERVER_PYTHON ?= .venv/bin/python
SERVER_SCRIPT := $(SERVER_PYTHON) scripts/server.py

.PHONY: server server-stop server-status server-restart

server:
	$(SERVER_SCRIPT) start $(if $(AUTH),--auth)

server-stop:
	$(SERVER_SCRIPT) stop

server-status:
	$(SERVER_SCRIPT) status

server-restart:
	$(SERVER_SCRIPT) restart-mlflow
