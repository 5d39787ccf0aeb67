# The tracking server of docker-compose.yml. It installs docker/mlflow-server.lock, the subset of the
# project's requirements.lock that mlflow[auth], psycopg2-binary and boto3 need (`make lock` writes both;
# tests/server/test_docker_files.py checks they agree), so the container and scripts/server.py run the
# same server.
FROM python:3.11-slim

COPY mlflow-server.lock /tmp/mlflow-server.lock
RUN pip install --no-cache-dir --no-deps --require-hashes -r /tmp/mlflow-server.lock && rm /tmp/mlflow-server.lock

# Basic auth as scripts/server.py configures it: users in a SQLite file on a volume, the admin from
# MLFLOW_AUTH_ADMIN_* (compose), password checks cached for a minute (each costs a PBKDF2 hash).
RUN mkdir -p /etc/mlflow /data/auth \
 && printf '%s\n' '[mlflow]' 'default_permission = READ' 'database_uri = sqlite:////data/auth/basic_auth.db' \
      'authorization_function = mlflow.server.auth:authenticate_request_basic_auth' \
      'auth_cache_ttl_seconds = 60' > /etc/mlflow/basic_auth.ini
# Server-side jobs (GenAI scorers) would start seven extra processes that this project never uses.
ENV MLFLOW_AUTH_CONFIG_PATH=/etc/mlflow/basic_auth.ini \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    PYTHONUNBUFFERED=1

EXPOSE 5000
