"""The `promote` entry point: `mlflow run . -e promote`, or `python entrypoints/promote.py -h`."""

from simclr_s2.app.cli import main
from simclr_s2.stages.promote import PROMOTE

if __name__ == "__main__":
    main(PROMOTE)
