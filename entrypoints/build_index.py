"""The `build_index` entry point: `mlflow run . -e build_index`, or `python entrypoints/build_index.py -h`."""

from simclr_s2.app.cli import main
from simclr_s2.stages.data import BUILD_INDEX

if __name__ == "__main__":
    main(BUILD_INDEX)
