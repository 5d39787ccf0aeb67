"""The `pretrain` entry point: `mlflow run . -e pretrain`, or `python entrypoints/pretrain.py -h`."""

from simclr_s2.app.cli import main
from simclr_s2.stages.pretrain import PRETRAIN

if __name__ == "__main__":
    main(PRETRAIN)
