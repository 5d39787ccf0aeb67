"""The `predict` entry point as a script: `python -m simclr_s2 predict` (what `mlflow run . -e predict` runs)."""
from simclr_s2.__main__ import run_script

if __name__ == "__main__":
    run_script(__file__)
