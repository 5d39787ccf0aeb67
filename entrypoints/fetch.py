"""The `fetch` entry point as a script: `python -m simclr_s2 fetch` (what `mlflow run . -e fetch` runs)."""
from simclr_s2.__main__ import run_script

if __name__ == "__main__":
    run_script(__file__)
