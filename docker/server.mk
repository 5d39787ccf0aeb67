# The local tracking stack (simclr_s2/server/, also scripts/server.py); the Makefile includes this file.
# `make server AUTH=1` starts mlflow with basic auth (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD), AUTH=0
# without it; plain `make server` keeps what the stack last ran with.
# Ports, credentials and the state folder come from the environment: see `python -m simclr_s2.server -h`
# and docker/.env.example.
SERVER_PYTHON ?= .venv/bin/python
SERVER_CLI := $(SERVER_PYTHON) -m simclr_s2.server

.PHONY: server server-stop server-status server-restart

server:
	$(SERVER_CLI) start $(if $(filter 0,$(AUTH)),--no-auth,$(if $(AUTH),--auth))

server-stop:
	$(SERVER_CLI) stop

server-status:
	$(SERVER_CLI) status

server-restart:
	$(SERVER_CLI) restart-mlflow
