"""The `finetune` entry point: `mlflow run . -e finetune`, or `python entrypoints/finetune.py -h`."""

from simclr_s2.app.cli import main
from simclr_s2.stages.classifier import FINETUNE

if __name__ == "__main__":
    main(FINETUNE)
