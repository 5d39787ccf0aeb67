"""The `main` entry point: `mlflow run . -e main`, or `python entrypoints/main.py -h`."""

from simclr_s2.app.cli import main
from simclr_s2.stages.grid import GRID

if __name__ == "__main__":
    main(GRID)
