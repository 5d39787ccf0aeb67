"""The `evaluate` entry point: `mlflow run . -e evaluate`, or `python entrypoints/evaluate.py -h`."""

from simclr_s2.app.cli import main
from simclr_s2.stages.evaluate import EVALUATE

if __name__ == "__main__":
    main(EVALUATE)
