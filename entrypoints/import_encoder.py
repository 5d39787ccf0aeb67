"""The `import_encoder` entry point as a script: `python -m simclr_s2 import_encoder`
(what `mlflow run . -e import_encoder` runs)."""
from simclr_s2.__main__ import run_script

if __name__ == "__main__":
    run_script(__file__)
