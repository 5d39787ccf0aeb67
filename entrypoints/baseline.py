"""The `baseline` entry point: `mlflow run . -e baseline`, or `python entrypoints/baseline.py -h`."""

from simclr_s2.app.cli import main
from simclr_s2.stages.classifier import BASELINE

if __name__ == "__main__":
    main(BASELINE)
