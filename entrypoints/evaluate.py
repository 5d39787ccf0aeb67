"""The `evaluate` entry point as a script: `python -m simclr_s2 evaluate` (what `mlflow run . -e evaluate` runs)."""
from simclr_s2.__main__ import run_script

if __name__ == "__main__":
    run_script(__file__)
