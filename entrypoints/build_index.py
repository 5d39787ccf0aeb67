"""The `build_index` entry point as a script: `python -m simclr_s2 build_index`
(what `mlflow run . -e build_index` runs)."""
from simclr_s2.__main__ import run_script

if __name__ == "__main__":
    run_script(__file__)
