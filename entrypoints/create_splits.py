"""The `create_splits` entry point as a script: `python -m simclr_s2 create_splits`
(what `mlflow run . -e create_splits` runs)."""
from simclr_s2.__main__ import run_script

if __name__ == "__main__":
    run_script(__file__)
