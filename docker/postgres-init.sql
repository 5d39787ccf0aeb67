-- Run once by the postgres image when its volume is created (/docker-entrypoint-initdb.d): Optuna's database
-- beside mlflow's (POSTGRES_DB), as simclr_s2/server/postgres.py makes for the native stack.
CREATE DATABASE optuna;
