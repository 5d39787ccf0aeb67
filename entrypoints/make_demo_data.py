"""The `make_demo_data` entry point: `mlflow run . -e make_demo_data`, or `python entrypoints/make_demo_data.py -h`."""

from simclr_s2.app.cli import main
from simclr_s2.stages.data import MAKE_DEMO_DATA

if __name__ == "__main__":
    main(MAKE_DEMO_DATA)
