"""The `compare` entry point: `mlflow run . -e compare`, or `python entrypoints/compare.py -h`."""

from simclr_s2.app.cli import main
from simclr_s2.stages.compare import COMPARE

if __name__ == "__main__":
    main(COMPARE)
