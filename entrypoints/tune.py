"""The `tune` entry point: `mlflow run . -e tune`, or `python entrypoints/tune.py -h`."""

from simclr_s2.app.cli import main
from simclr_s2.stages.tune import TUNE

if __name__ == "__main__":
    main(TUNE)
