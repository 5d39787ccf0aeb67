"""The `make_demo_data` entry point as a script: `python -m simclr_s2 make_demo_data`
(what `mlflow run . -e make_demo_data` runs)."""
from simclr_s2.__main__ import run_script

if __name__ == "__main__":
    run_script(__file__)
