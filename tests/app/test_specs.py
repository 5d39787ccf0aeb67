"""Each setting defined once: the specs parse and check values, and MLproject and the manual's parameter
tables are exactly what the specs generate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simclr_s2.app import boundary, cli, manual, mlproject
from simclr_s2.app.cli import parse
from simclr_s2.errors import UserError
from simclr_s2.settings.context import Context
from simclr_s2.settings.experiment import ProjectExperimentProvider, in_project
from simclr_s2.settings.spec import build, canonical
from simclr_s2.settings.specs import (
    ENTRY_POINTS,
    Baseline,
    Compare,
    CreateSplits,
    Evaluate,
    Fetch,
    Finetune,
    Grid,
    MakeDemoData,
    Pretrain,
    Promote,
    Tune,
)
from simclr_s2.stages.classifier import BASELINE, FINETUNE
from simclr_s2.stages.compare import COMPARE
from simclr_s2.stages.data import BUILD_INDEX, CREATE_SPLITS
from simclr_s2.stages.evaluate import EVALUATE
from simclr_s2.stages.fetch import FETCH
from simclr_s2.stages.pretrain import IMPORT_ENCODER, PRETRAIN
from simclr_s2.stages.tune import TUNE
from simclr_s2.tracking.door import Tracking

ROOT = Path(__file__).resolve().parents[2]


def test_mlproject_is_generated_from_the_specs():
    assert (ROOT / "MLproject").read_text() == mlproject.render(), "run `make mlproject` after changing a spec"


def test_the_manuals_parameter_tables_are_generated_from_the_specs():
    page = manual.PAGE.read_text()
    assert manual.BEGIN in page and manual.END in page
    assert page == manual.render(page), "run `make docs` after changing a spec"
    assert "| NT-Xent temperature, 0.001..10. |" in manual.tables()  # a range's dots are its own


def test_every_entry_point_has_its_script():
    for name in ENTRY_POINTS:
        assert (ROOT / "entrypoints" / f"{name}.py").is_file(), name


def test_values_from_the_command_line_and_typed_values_give_one_key():
    given = build(Finetune, {"fraction": "10.0", "lr": "0.00005", "register": "True"})
    typed = build(Finetune, {"fraction": 10, "lr": 5e-5, "register": True})
    assert given == typed and given.given() == typed.given()
    assert given.given()["fraction"] == "10" and given.given()["lr"] == "5e-05"
    assert "reuse" not in given.given()  # how a command runs is not part of what it produces


@pytest.mark.parametrize(("values", "message"), [
    ({"lr": "-1"}, "lr: expected a finite number > 0, got -1"),
    ({"lr": "nan"}, "lr: expected a finite number > 0, got nan"),
    ({"fraction": "7.5"}, "fraction: expected a whole number, got '7.5'"),
    ({"fraction": "0"}, "fraction: expected a whole percentage in 1..100, got 0"),
    ({"dropout": "1"}, "dropout: expected a probability in [0, 1), got 1"),
    ({"trainable": "encoder"}, "trainable: expected one of head2, head, all, got 'encoder'"),
    ({"register": "maybe"}, "register: expected true or false, got 'maybe'"),
    ({"nonsense": "1"}, "finetune: no parameter nonsense"),
])
def test_a_bad_value_is_one_line_naming_the_parameter(values, message):
    with pytest.raises(UserError) as caught:
        build(Finetune, values)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_command_line_is_built_from_the_spec():
    spec = parse(Finetune, ["--fraction", "25", "--batch-size", "16"])
    assert (spec.fraction, spec.batch_size, spec.trainable) == (25, 16, "head2")
    with pytest.raises(UserError, match="unrecognized arguments: --bogus"):
        parse(Finetune, ["--bogus", "1"])


def test_an_undeclared_name_is_never_read_as_the_parameter_it_abbreviates():
    """`mlflow run -P epoch=1` passes `--epoch 1`: refused, not taken as --epochs."""
    with pytest.raises(UserError, match="unrecognized arguments: --epoch 1"):
        parse(Finetune, ["--epoch", "1"])


@pytest.mark.parametrize(("stage", "values"), [(PRETRAIN, {"index": "x", "exclude_split": "none"}), (IMPORT_ENCODER, {
    "state_dict": "w.pt"})])
@pytest.mark.parametrize("name", ["latest", "v1", "a b"])
def test_an_alias_mlflow_refuses_is_refused_before_any_work(stage, values, name):
    """Refused by the spec, before any input is made or read and before a run opens, not once the version is
    registered."""
    with pytest.raises(UserError, match=rf"^name: expected letters, digits, '_' or '-', .*got {name}$"):
        build(stage.spec, {**values, "name": name})


def test_lists_and_cross_field_checks():
    grid = build(Grid, {"fractions": "1, 10", "trainable": "head2,all", "schemes": "basic"})
    assert grid.fractions == (1, 10) and grid.trainable == ("head2", "all")
    assert canonical(grid.fractions) == "1,10"
    with pytest.raises(UserError, match="fraction: expected a whole percentage in 1..100 or any"):
        build(Promote, {"fraction": "ten"})
    assert build(CreateSplits, {"ratios": "0.5,0.25,0.25"}).ratios == (0.5, 0.25, 0.25)  # positions may repeat


@pytest.mark.parametrize(("cls", "values", "message"), [
    (Grid, {"fractions": "10,10"}, "fractions: expected distinct values, 10 repeats an earlier one"),
    (Grid, {"seeds": "0,00"}, "seeds: expected distinct values, 0 repeats"),
    (Grid, {"schemes": "basic,basic"}, "schemes: expected distinct values, basic repeats"),
    (Grid, {"trainable": "head2,head2"}, "trainable: expected distinct values, head2 repeats"),
    (Grid, {"baseline_arch": "resnet18,resnet18"}, "baseline_arch: expected distinct values, resnet18 repeats"),
    (Grid, {"split_kind": "folds-3", "folds": "0,00"}, "folds: expected distinct values, 00 repeats"),
    (Grid, {"min_fractions": "0.1,0.10"}, "min_fractions: expected distinct values, 0.10 repeats"),
    (Tune, {"batch_sizes": "16,16,64"}, "batch_sizes: expected distinct values, 16 repeats"),
    (Tune, {"trainables": "head,head2,head"}, "trainables: expected distinct values, head repeats"),
    (Fetch, {"parts": "maps,metadata,maps"}, "parts: expected distinct values, maps repeats"),
])
def test_a_list_value_given_twice_however_spelt_is_refused_by_name(cls, values, message):
    """Each value plans its own cells or trials: a repeat would run them twice, or weigh one choice double."""
    with pytest.raises(UserError, match=message) as caught:
        build(cls, values)
    assert "\n" not in str(caught.value)


def test_a_blank_study_name_is_refused():
    with pytest.raises(UserError, match=r"^study_name: expected a name, or auto, got nothing$"):
        build(Tune, {"study_name": " "})


@pytest.mark.parametrize(("cls", "values"), [
    (Finetune, {"seed": "-1"}), (Baseline, {"seed": "1e30"}), (Tune, {"seed": str(2**32)}),
    (Pretrain, {"seed": "-1"}), (CreateSplits, {"seed": "-1"}), (MakeDemoData, {"seed": "-1"}),
    (Grid, {"seeds": "0,1,-1"}),
])
def test_a_seed_numpy_and_torch_cannot_take_is_refused_by_name(cls, values):
    name = next(iter(values))
    with pytest.raises(UserError, match=rf"^{name}: expected a whole number in 0..4294967295, got "):
        build(cls, values)
    assert build(cls, {name: "4294967295"})  # the largest seed they take


@pytest.mark.parametrize(("stage", "argv", "message"), [
    (PRETRAIN, ["--bands", "B04,B99"], "bands: expected study, all, or distinct band names among B01,"),
    (PRETRAIN, ["--brightness", "0.2"], "augment brightness: only with jitter='per_band'"),
    (PRETRAIN, ["--crop-min-scale", "2"], "crop_min_scale: expected a share in (0, 1], got 2"),
    (BASELINE, ["--bands", "B10"], "bands: expected study, all, or distinct band names"),
    (FINETUNE, ["--bands", "B04,B04"], "bands: expected study, all, or distinct band names"),
    (IMPORT_ENCODER, ["--state-dict", "w.pt", "--name", "w", "--bands", "rgb"], "bands: expected study, all"),
    (TUNE, ["--lr-min", "0.1", "--lr-max", "0.01"], "lr_min, lr_max: expected 0 < lr_min <= lr_max, got 0.1, 0.01"),
    (TUNE, ["--dropout-min", "0.5", "--dropout-max", "0.1"], "dropout_min, dropout_max: expected 0 <= dropout_min"),
    (TUNE, ["--metric", "test_f1"], "metric: test_f1 is a test metric"),
    (TUNE, ["--storage", "::nope"], "storage: expected auto or a database URL"),
    (CREATE_SPLITS, ["--out", ""], "out: expected a path or URI, not an empty value"),
    (BUILD_INDEX, ["--archive", ""], "archive: expected a path or URI, not an empty value"),
    (BUILD_INDEX, ["--out", " "], "out: expected a path or URI, not an empty value"),
    (FINETUNE, ["--split", ""], "split: expected a path or URI, not an empty value"),
    (FINETUNE, ["--pretrained", ""], "pretrained: expected a path or URI, not an empty value"),
    (EVALUATE, ["--model-uri", ""], "model_uri: expected a path or URI, not an empty value"),
    (PRETRAIN, ["--index", "i", "--exclude-split", ""], "exclude_split: expected auto, none, or split folders"),
    (PRETRAIN, ["--index", "i", "--exclude-split", ","], "exclude_split: expected auto, none, or split folders"),
    (PRETRAIN, ["--index", "i", "--exclude-split", "a,,b"], "exclude_split: expected auto, none, or split folders"),
    (FETCH, ["--parts", ""], "parts: expected at least one value"),
    (CREATE_SPLITS, ["--fold", "2", "--kind", "spatial"], "fold 2: kind spatial has no folds"),
    (CREATE_SPLITS, ["--kind", "folds-3", "--fold", "3"], "fold 3: kind folds-3 has folds 0 to 2"),
    (CREATE_SPLITS, ["--official-split", "train+bogus"], "or train / validation / test joined by '+', got train+bogus"),
    (CREATE_SPLITS, ["--official-split", ""], "official_split: expected all, or train / validation / test"),
    (FETCH, ["--tiles", "33uup"], "tiles: expected all, or Sentinel-2 tiles such as 33UUP joined by ','"),
    (FETCH, ["--tiles", ""], "tiles: expected all, or Sentinel-2 tiles such as 33UUP joined by ','"),
    (FETCH, ["--countries", "Austria,,Serbia"], "countries: expected all, or countries joined by ','"),
    (FETCH, ["--countries", "Austria,Austria"], "countries: expected distinct values, Austria repeats"),
    (PRETRAIN, ["--name", "none"], "name: expected an alias other than auto, none, scratch, any"),
    (IMPORT_ENCODER, ["--state-dict", "w.pt", "--name", "Scratch"], "name: expected an alias other than auto"),
    (COMPARE, ["--n-boot", "1e12"], "n_boot: expected 100..100,000 resamples, got 1000000000000"),
    (COMPARE, ["--n-boot", "1"], "n_boot: expected 100..100,000 resamples, got 1"),
    (CREATE_SPLITS, ["--kind", "official", "--official-split", "train"], "a kind 'official' split uses all three"),
    (CREATE_SPLITS, ["--natural-test", "true", "--natural-share", "0"], "natural_share: expected a share of the"),
])
def test_a_check_that_needs_no_data_refuses_before_any_work(monkeypatch, capsys, stage, argv, message):
    """Refused while parsing: no context is built, nothing is resolved, read or opened."""
    monkeypatch.setattr(boundary, "run", lambda *args: pytest.fail("the command ran"))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    with pytest.raises(SystemExit) as exited:
        cli.main(stage, argv)
    err = capsys.readouterr().err
    assert exited.value.code == cli.USER_ERROR and len(err.strip().splitlines()) == 1
    assert err.startswith("error: ") and message in err, err


def test_an_experiment_id_the_store_does_not_have_is_one_line(tmp_path):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db", "SIMCLR_S2_HOME": str(tmp_path / "h")}
    for given in ("999", "abc"):
        ctx = Context.from_env({**env, "MLFLOW_EXPERIMENT_ID": given})
        with pytest.raises(UserError) as caught:
            ctx.experiment_id  # noqa: B018 - the property looks the experiment up
        assert str(caught.value).startswith(f"MLFLOW_EXPERIMENT_ID: experiment {given} does not exist in sqlite:")
        assert "\n" not in str(caught.value)
    ctx = Context.from_env(env)
    Tracking.of(ctx).client.delete_experiment(ctx.experiment_id)
    with pytest.raises(UserError, match=f"MLFLOW_EXPERIMENT_ID: experiment {ctx.experiment_id} is deleted"):
        Context.from_env({**env, "MLFLOW_EXPERIMENT_ID": ctx.experiment_id}).experiment_id  # noqa: B018
    created = Context.from_env({**env, "MLFLOW_EXPERIMENT_NAME": "other"}).experiment_id
    assert Context.from_env({**env, "MLFLOW_EXPERIMENT_ID": created}).experiment_id == created


def test_the_context_comes_from_the_environment(tmp_path):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db", "SIMCLR_S2_HOME": str(tmp_path / "h"),
           "SIMCLR_S2_DEMO_PATCHES": "64", "SIMCLR_S2_MAX_EPOCHS": "3"}
    ctx = Context.from_env(env)
    assert ctx.experiment_name == "simclr-s2" and ctx.home == tmp_path / "h"
    assert ctx.sizes.demo_patches == 64 and ctx.sizes.epochs(50) == 3 and ctx.sizes.trials(20) == 20
    assert Context.from_env({**env, "MLFLOW_EXPERIMENT_NAME": "mine"}).experiment_name == "mine"
    assert Context.from_env({**env, "MLFLOW_EXPERIMENT_ID": "0"}).experiment_id_given is None
    with pytest.raises(UserError, match="SIMCLR_S2_DEMO_PATCHES: expected a whole number > 0, got 'many'"):
        Context.from_env({**env, "SIMCLR_S2_DEMO_PATCHES": "many"})


def test_mlflow_run_in_a_project_folder_uses_the_named_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    assert in_project(ROOT) and not in_project(tmp_path)
    monkeypatch.chdir(ROOT)
    provider = ProjectExperimentProvider()
    assert provider.in_context()
    experiment_id = provider.get_experiment_id()
    assert Context.from_env().experiment_id == experiment_id != "0"


def test_artifacts_live_beside_a_sqlite_store_whatever_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "elsewhere" / "mlflow.db"
    store.parent.mkdir()
    ctx = Context.from_env({"MLFLOW_TRACKING_URI": f"sqlite:///{store}", "SIMCLR_S2_HOME": str(tmp_path / "h")})
    location = Tracking.of(ctx).client.get_experiment(ctx.experiment_id).artifact_location
    assert location == (store.parent / "mlruns").as_uri()


@pytest.mark.parametrize(("cls", "name"), [(Grid, "trainable"), (Grid, "baseline_arch"), (Grid, "ambiguous"),
                                           (Grid, "schemes"), (Tune, "trainables"), (Fetch, "parts")])
@pytest.mark.parametrize("given", ["", " , "])
def test_an_empty_list_is_refused_by_name(cls, name, given):
    """`-P trainable=` planned no fine-tune cells, `ambiguous=` no cells at all, silently."""
    with pytest.raises(UserError, match=rf"^{name}: expected at least one value, got nothing$"):
        build(cls, {name: given})


@pytest.mark.parametrize(("given", "message"), [
    ("", "expected auto, none, or aliases or URIs joined by ','"),
    ("ben,,ca-sgd", "expected auto, none, or aliases or URIs"),
    ("ben, ben", "expected distinct values, ben repeats an earlier one")])
def test_the_grids_encoders_are_a_list_without_blanks_or_repeats(given, message):
    """encoders= planned no fine-tune cells, silently, and a repeat was dropped without a word."""
    with pytest.raises(UserError, match=rf"^encoders: {message}"):
        build(Grid, {"encoders": given})


def test_the_grids_baselines_alone_are_encoders_none_and_no_cell_at_all_is_refused():
    """encoders=none is how a grid of baselines alone is asked for (it was a blank); with baseline=false it
    would plan nothing."""
    assert build(Grid, {"encoders": "none"}).encoders == "none"
    with pytest.raises(UserError, match=r"^encoders: none with baseline=false plans no cell"):
        build(Grid, {"encoders": "none", "baseline": "false"})


@pytest.mark.parametrize("cls", [Finetune, Baseline, Evaluate, Tune, Compare, Promote, Fetch])
@pytest.mark.parametrize(("given", "closest"), [
    ("Basic", " (closest: basic)"), ("", ""), ("expaned", " (closest: expanded)")])
def test_a_scheme_that_names_no_split_folder_is_refused_before_any_work(cls, given, closest):
    """finetune scheme=Basic made the demo chain, then refused; compare and promote said no version matched."""
    values = {"model_uri": "models:/m/1"} if cls is Evaluate else {}
    with pytest.raises(UserError, match=rf"^scheme: expected basic, expanded, or the custom_<hash> folder "
                                        rf"create_splits named{re.escape(closest)}, got"):
        build(cls, {**values, "scheme": given})
    assert build(cls, {**values, "scheme": "custom_0a1b2c3d"}).scheme == "custom_0a1b2c3d"
