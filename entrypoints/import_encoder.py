"""The `import_encoder` entry point: `mlflow run . -e import_encoder`, or `python entrypoints/import_encoder.py -h`."""

from simclr_s2.app.cli import main
from simclr_s2.stages.pretrain import IMPORT_ENCODER

if __name__ == "__main__":
    main(IMPORT_ENCODER)
