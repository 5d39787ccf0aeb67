"""Run the shared MLflow tracking stack on this machine: PostgreSQL + SeaweedFS (S3) + mlflow server.

Every listener is bound to 127.0.0.1 and all state lives in one folder (default <repo>/.server):
postgres/ (database cluster, owned by the postgres user), seaweedfs/ (object store), auth/ (basic-auth
users), logs/, run/ (pid files), stack.json (ports and mode) and secrets.json (0600: the passwords
the stack was created with, so a restart needs none of them in the environment).

    python -m simclr_s2.server start [--auth]    # each part health-checked before the next one starts;
                                                 # basic auth as the stack last ran unless --auth/--no-auth
    python -m simclr_s2.server status [--json]   # exit status 0 when every part is healthy, 3 otherwise
    python -m simclr_s2.server restart-mlflow    # only the tracking server (the rest must run); the data stays
    python -m simclr_s2.server stop-mlflow       # `start` brings it back
    python -m simclr_s2.server stop
    eval "$(python -m simclr_s2.server env)"     # export MLFLOW_TRACKING_URI (start prints it too)

`python scripts/server.py ...` is the same command line; `make server` and friends (docker/server.mk) call it.

Environment (defaults in brackets):
    SIMCLR_SERVER_DIR       state folder [<repo>/.server]; --dir overrides it
    (`start` takes each setting from the environment, else from the stack's previous start, else the default)
    SIMCLR_PG_PORT          PostgreSQL [15432]
    SIMCLR_S3_PORT          SeaweedFS S3 endpoint [18333]; SeaweedFS also takes the next four ports
                            (master, volume, filer, admin) and each of the five plus 10000 (gRPC)
    SIMCLR_MLFLOW_PORT      mlflow server [15000]
    SIMCLR_MLFLOW_WORKERS   mlflow server worker processes [2]
    SIMCLR_PG_PASSWORD      password of the PostgreSQL role `mlflow` [mlflow]; fixed when the cluster
                            is created
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY   the object store's admin credentials [local defaults];
                            only the mlflow server gets them: clients go through --serve-artifacts;
                            fixed while SeaweedFS runs
    MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD   with --auth: the basic-auth admin created on
                            the first authenticated start (password of 12 characters or more), kept by
                            later starts whoever runs them; clients send the same variables
    SIMCLR_PG_BIN, SIMCLR_WEED_BIN   where pg_ctl and weed live, when not found by themselves

Modules: config (ports, secrets, state folder), processes (detached processes and waits), preflight
(ports and packages checked before anything starts), postgres, seaweedfs, mlflow_server (one service
each), stack (start, stop, status of the three in order) and cli (the command line).
"""
