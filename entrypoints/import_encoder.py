"""import_encoder: register an encoder trained elsewhere (a plain PyTorch state dict of a SimCLR model:
`encoder.*` and `head.*` keys, as SimCLRModel.state_dict() writes them) like one pretrained here."""

from __future__ import annotations

from collections.abc import Sequence

import mlflow
import torch

from simclr_s2.bigearthnet.bands import resolve_bands
from simclr_s2.cli import parser, run_entry_point
from simclr_s2.errors import UserError
from simclr_s2.hashing import sha256_file
from simclr_s2.models import ARCHS, load_encoder_state
from simclr_s2.tracking.artifacts import local_path
from simclr_s2.tracking.registry import ENCODER_MODEL, log_and_register
from simclr_s2.tracking.runs import stage_run


def main(argv: Sequence[str] | None) -> None:
    p = parser(__doc__)
    p.add_argument("--state-dict", required=True, help="a .pt file or an artifact URI (runs:/, s3://, ...)")
    p.add_argument("--name", required=True, help="alias of the registered version, e.g. ca-adam")
    p.add_argument("--arch", choices=ARCHS, default="resnet152")
    p.add_argument("--bands", default="study")
    args = p.parse_args(argv)
    bands = resolve_bands(args.bands)
    with stage_run("import_encoder", vars(args), run_name=f"import-{args.name}-{args.arch}",
                   tags={"arch": args.arch, "pretrained": args.name}):
        path = local_path(args.state_dict, "state_dict")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise UserError(f"state_dict: {path} is not a PyTorch state dict ({error})") from None
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]  # a pretrain checkpoint: the weights are under "model"
        model = load_encoder_state(state, args.arch, len(bands))
        digest = sha256_file(path)
        mlflow.log_params({"state_dict_sha256": digest})
        example = torch.randn(2, len(bands), 120, 120, generator=torch.Generator().manual_seed(0)).numpy()
        version = log_and_register(model, ENCODER_MODEL, example, aliases=(args.name,), tags={
            "stage": "import_encoder", "arch": args.arch, "bands": args.bands, "data_digest": "unknown (imported)",
            "optimizer": "unknown (imported)", "epochs": "unknown (imported)", "name": args.name,
            "source": args.state_dict, "state_dict_sha256": digest})
        print(f"encoder: models:/{ENCODER_MODEL}@{args.name} (version {version}) from {args.state_dict}")


if __name__ == "__main__":
    run_entry_point(main)
