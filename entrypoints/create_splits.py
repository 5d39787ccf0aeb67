"""The `create_splits` entry point: `mlflow run . -e create_splits`, or `python entrypoints/create_splits.py -h`."""

from simclr_s2.app.cli import main
from simclr_s2.stages.data import CREATE_SPLITS

if __name__ == "__main__":
    main(CREATE_SPLITS)
