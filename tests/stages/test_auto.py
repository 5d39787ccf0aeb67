"""`auto` fills only what was left out, and means one place everywhere: the data stages' default paths lie
in the data folder (SIMCLR_S2_DATA) whatever the working folder, where the demo chain keeps them; a value
given is kept. What cannot be right (an experiment the store lacks, weights that are NaN or recorded for
other bands) is one line, and nothing is written or registered."""

from __future__ import annotations

from dataclasses import asdict
from types import SimpleNamespace

import pytest
import torch
from project_runner import Project, project_env

from simclr_s2.app.cli import main
from simclr_s2.errors import UserError
from simclr_s2.learning.config import AugmentConfig
from simclr_s2.learning.models import build_simclr
from simclr_s2.settings import specs
from simclr_s2.settings.context import Context
from simclr_s2.settings.spec import build
from simclr_s2.stages import auto
from simclr_s2.stages import pretrain as pretrain_stage
from simclr_s2.stages.base import Stage, find_step
from simclr_s2.stages.data import ARCHIVE_TAG, BUILD_INDEX, CREATE_SPLITS, DEMO_MARKER, MAKE_DEMO_DATA
from simclr_s2.stages.pretrain import IMPORT_ENCODER, PRETRAIN
from simclr_s2.tracking.names import ENCODER_MODEL

RGB = ("B04", "B03", "B02")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A project of its own: the session's demo chain must not meet the archives written here."""
    root = tmp_path_factory.mktemp("auto")
    return Project(root, project_env(root, SIMCLR_S2_DEMO_PATCHES="8"))


def _fails(project: Project, capsys: pytest.CaptureFixture, stage: Stage, *argv: str, **env: str) -> str:
    """`stage` through its entry point boundary in `project` (plus `env`); the one error line it printed."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**project.env, **env}.items():
            mp.setenv(key, value)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        with pytest.raises(SystemExit) as ended:
            main(stage, list(argv))
    err = capsys.readouterr().err
    assert ended.value.code == 2 and len(err.strip().splitlines()) == 1, err[-3000:]
    return err.strip()


def test_an_exclude_split_given_with_index_auto_is_kept(monkeypatch, tmp_path):
    monkeypatch.setattr(auto, "demo_index", lambda ctx, make: "runs:/i/index/index.parquet")
    monkeypatch.setattr(auto, "demo_test_sets", lambda ctx, make: "runs:/s/splits")
    ctx = Context.from_env(project_env(tmp_path))
    for given in ("none", "/my/splits,runs:/t/splits"):
        spec = build(specs.Pretrain, {"exclude_split": given})
        step = PRETRAIN.step(spec, PRETRAIN.resolve(spec, ctx))
        assert step.params()["exclude_split"] == given and "resolved_exclude_split" not in step.params()
        assert step.params()["resolved_index"] == "runs:/i/index/index.parquet"
    left_out = PRETRAIN.resolve(build(specs.Pretrain, {}), ctx)
    assert left_out == {"index": "runs:/i/index/index.parquet", "exclude_split": "runs:/s/splits"}


def test_the_data_stages_defaults_are_where_the_demo_chain_looks(fresh, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # not the project folder: nothing may land here
    ctx = Context.from_env(fresh.env)
    demo = ctx.data_root / "demo"
    made = fresh.client.get_run(fresh.run_stage(MAKE_DEMO_DATA, n_patches=ctx.sizes.demo_patches))
    assert (made.data.params["out"], made.data.params["resolved_out"]) == ("auto", str(demo / "BigEarthNet-v1.0"))
    assert (demo / "BigEarthNet-v1.0" / DEMO_MARKER).is_file()
    chain_spec = build(specs.MakeDemoData, {"n_patches": ctx.sizes.demo_patches})  # what `auto` makes
    assert find_step(MAKE_DEMO_DATA, chain_spec, ctx).info.run_id == made.info.run_id
    fresh.run_stage(BUILD_INDEX, workers=1)
    assert (demo / "index" / "index.parquet").is_file()
    assert CREATE_SPLITS.resolve(build(specs.CreateSplits, {}), ctx) == {
        "index": str(demo / "index" / "index.parquet"), "out": str(demo / "splits")}
    assert list(tmp_path.iterdir()) == []


def test_an_experiment_the_store_lacks_is_one_line_before_anything_is_written(fresh, capsys, tmp_path):
    line = _fails(fresh, capsys, MAKE_DEMO_DATA, "--out", str(tmp_path / "a"), "--n-patches", "8",
                  MLFLOW_EXPERIMENT_ID="999")
    assert line.startswith("error: MLFLOW_EXPERIMENT_ID: experiment 999 does not exist in sqlite:")
    assert not (tmp_path / "a").exists()


def _versions(project: Project) -> int:
    return len(project.client.search_model_versions(f"name = '{ENCODER_MODEL}'"))


def test_import_encoder_refuses_nan_weights_and_bands_the_checkpoint_contradicts(fresh, capsys, tmp_path):
    torch.manual_seed(0)
    model = build_simclr("resnet18", len(RGB))
    checkpoint = {"config": {"augment": asdict(AugmentConfig(bands=RGB))}, "model": model.state_dict()}
    torch.save(checkpoint, tmp_path / "pretrain.pt")
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                for k, v in model.state_dict().items()}, tmp_path / "nan.pt")
    before = _versions(fresh)
    line = _fails(fresh, capsys, IMPORT_ENCODER, "--state-dict", str(tmp_path / "pretrain.pt"), "--name", "rgb",
                  "--bands", "B02,B03,B04")
    assert line == f"error: bands: {tmp_path / 'pretrain.pt'} was pretrained on B04,B03,B02; expected that list " \
                   "(names and order), got B02,B03,B04"
    line = _fails(fresh, capsys, IMPORT_ENCODER, "--state-dict", str(tmp_path / "nan.pt"), "--name", "nan",
                  "--bands", ",".join(RGB))
    assert line.startswith(f"error: {tmp_path / 'nan.pt'}: ") and "hold NaN or infinite values" in line
    assert _versions(fresh) == before
    fresh.run_stage(IMPORT_ENCODER, state_dict=str(tmp_path / "pretrain.pt"), name="rgb", bands=",".join(RGB))
    version = fresh.client.get_model_version_by_alias(ENCODER_MODEL, "rgb")
    assert version.tags["band_list"] == ",".join(RGB) and _versions(fresh) == before + 1


def test_import_encoder_takes_a_safetensors_file_of_bigearthnets_12_bands_with_source_bands_all(fresh, capsys,
                                                                                                 tmp_path):
    """torchgeo's SENTINEL2_ALL_SECO_ECO as a plain safetensors file: 12 bands, B10 left out, DN / 10,000.
    By default (SSL4EO-S12's 13 bands) one line says how to import it; with source_bands=all it registers."""
    from safetensors.torch import save_file

    from simclr_s2.bigearthnet.bands import BANDS
    from simclr_s2.learning.models import Encoder

    torch.manual_seed(0)
    save_file(Encoder("resnet18", len(BANDS)).state_dict(), tmp_path / "seco_eco.safetensors")
    before = _versions(fresh)
    capsys.readouterr()  # what making the store logged, where this test is the module's first
    line = _fails(fresh, capsys, IMPORT_ENCODER, "--state-dict", str(tmp_path / "seco_eco.safetensors"),
                  "--name", "seco-eco")
    assert "conv1.weight has shape (64, 12, 7, 7), expected (64, 13, 7, 7)" in line and "source_bands=all" in line
    assert _versions(fresh) == before
    fresh.run_stage(IMPORT_ENCODER, state_dict=str(tmp_path / "seco_eco.safetensors"), name="seco-eco",
                    source_bands="all")
    tags = fresh.client.get_model_version_by_alias(ENCODER_MODEL, "seco-eco").tags
    assert (tags["band_list"], tags["scaling"], tags["layout"], tags["source_bands"]) == \
        (",".join(BANDS), "reflectance/10000", "timm", "all")


def test_path_defaults_resolve_into_the_data_folder_only_when_left_out(tmp_path):
    ctx = Context.from_env(project_env(tmp_path))
    given = build(specs.BuildIndex, {"archive": str(tmp_path / "mine")})
    assert BUILD_INDEX.resolve(given, ctx) == {"out": str(ctx.data_root / "demo" / "index")}


def test_each_link_of_the_chain_is_searched_for_once_per_command(monkeypatch, tmp_path):
    """finetune asks for the demo index four times and the basic split twice; the store is searched once for
    each link, and again only by a new command, by one that reruns what it would reuse, or while missing."""
    asked: list[str] = []

    def step_run(stage, spec, ctx, make, usable=None, tags=None):
        asked.append(stage.name)
        return None if stage is CREATE_SPLITS and not make else SimpleNamespace(
            info=SimpleNamespace(run_id=f"{stage.name}-{len(asked)}"),
            data=SimpleNamespace(tags={ARCHIVE_TAG: str(tmp_path / "archive")}))

    monkeypatch.setattr(auto, "step_run", step_run)
    ctx = Context.from_env(project_env(tmp_path))
    assert auto.demo_splits(ctx, "basic", make=False) is None
    assert asked == [MAKE_DEMO_DATA.name, BUILD_INDEX.name, CREATE_SPLITS.name]
    basic = auto.demo_splits(ctx, "basic")
    both = auto.demo_test_sets(ctx)
    assert both.split(",")[0] == basic == auto.split_ref(ctx, "auto", "basic", make=True)
    assert auto.demo_index(ctx) == auto.demo_index(ctx, make=False)
    assert asked[3:] == [CREATE_SPLITS.name] * 2
    for fresh_ctx in (Context.from_env(project_env(tmp_path)), ctx.with_reuse(False)):
        asked.clear()
        auto.demo_index(fresh_ctx)
        assert asked == [MAKE_DEMO_DATA.name, BUILD_INDEX.name]


def test_a_demo_link_not_found_says_it_may_be_the_older_codes():
    """The demo's runs are keyed by the code's fingerprint: after an upgrade, a store holding the old code's
    said it had none at all."""
    with pytest.raises(UserError, match=r"^pretrained: auto names the demo encoder, and this tracking store has none "
                                        r"made by this version of the code yet; "):
        pretrain_stage._demo(None, "pretrained", "encoder")
