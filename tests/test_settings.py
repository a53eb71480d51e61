"""One declaration per setting: config files, flags and the store's record agree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pytest
import typer
from typer.testing import CliRunner

from tests.videos import write_video
from vssl.aggregate.config import ScaleConfig
from vssl.cli import main as cli_main
from vssl.errors import VsslError
from vssl.extract import config as extract_config
from vssl.extract.config import ExtractConfig
from vssl.features_store import FeatureStore
from vssl.settings import Settings, setting, settings_options

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class Toy(Settings):
    SECTION = "toy"
    width: int = setting(4, "a width")
    name: Optional[str] = setting(None, "a name")
    fast: bool = setting(False, "go fast")
    hidden: int = setting(1, "not a flag", cli=False)


def test_a_field_is_a_flag_a_toml_key_and_a_checked_value(tmp_path):
    app = typer.Typer()
    seen = {}

    @app.command()
    @settings_options(Toy)
    def run(config: Optional[str] = typer.Option(None, "--config"), overrides: dict = None) -> None:
        seen["cfg"] = Toy.load(config, overrides)

    runner = CliRunner()
    assert runner.invoke(app, ["--width", "9", "--fast"]).exit_code == 0
    assert seen["cfg"] == Toy(width=9, fast=True)
    assert "--hidden" not in runner.invoke(app, ["--help"]).output
    (tmp_path / "t.toml").write_text("[toy]\nwidth = 3\nname = 'x'\n")
    assert runner.invoke(app, ["--config", str(tmp_path / "t.toml"), "--width", "5"]).exit_code == 0
    assert seen["cfg"] == Toy(width=5, name="x")  # the flag beats the file
    (tmp_path / "bad.toml").write_text("widht = 3\n")
    with pytest.raises(VsslError, match="unknown key.*widht"):
        Toy.from_toml(tmp_path / "bad.toml")
    with pytest.raises(VsslError, match="toy config: width='3' must be an integer"):
        Toy(width="3")


def test_heads_follow_the_width_unless_set():
    assert ScaleConfig().heads == 8 and ScaleConfig(width=512).heads == 16  # width / 32, as released
    assert ScaleConfig().replace(width=128).heads == 4  # a copy derives its own
    assert ScaleConfig(heads=2).replace(width=128).heads == 2  # an explicit value stays
    assert ScaleConfig.from_dict(ScaleConfig(width=64).to_dict()) == ScaleConfig(width=64)


@pytest.mark.slow
def test_extract_config_file_flags_recipe_and_record(tmp_path, monkeypatch, capsys):
    for i in range(2):
        write_video(tmp_path / "v" / "a" / f"{i}.mp4", 12 + 5 * i)
    (tmp_path / "x.toml").write_text("[extract]\nviews = 'random:3'\nseed = 7\nbatch-size = 4\n")

    def cli(*args: str) -> int:
        with pytest.raises(SystemExit) as done:
            cli_main(["extract", str(tmp_path / "v"), "--quiet", *args])
        return done.value.code

    assert cli("--out", str(tmp_path / "a"), "--config", str(tmp_path / "x.toml"), "--seed", "8") == 0
    view = FeatureStore.open(tmp_path / "a").view("random3")
    assert view.spec["seed"] == 8  # the flag overrides the file
    assert view.group.attrs["extract"]["views"] == "random:3" and view.group.attrs["extract"]["seed"] == 8

    monkeypatch.setitem(extract_config.RECIPES, "paper", ExtractConfig(views="uniform:1x1", dtype="float32"))
    assert cli("--out", str(tmp_path / "b"), "--recipe", "paper") == 0
    store = FeatureStore.open(tmp_path / "b")
    assert store.view_names() == ["uniform1x1"] and str(store.view("uniform1x1").dtype) == "float32"
    capsys.readouterr()
    assert cli("--out", str(tmp_path / "c"), "--recipe", "nosuch") == 2
    err = capsys.readouterr().err
    assert "unknown recipe" in err and "paper" in err and len(err.strip().splitlines()) == 1
    assert cli("--out", str(tmp_path / "d"), "--decoder", "vlc") == 2
    assert "decoder='vlc' must be one of auto, pyav, decord" in capsys.readouterr().err


def test_resume_compares_resolved_settings(tmp_path):
    """A run of vssl 0.1 recorded heads=8 explicitly; today's default derives 8 from width 256."""
    import numpy as np

    from vssl.aggregate import train
    from vssl.features_store.synthetic import make_synthetic_store

    rng = np.random.default_rng(0)
    make_synthetic_store(tmp_path / "s", rng.normal(size=(16, 4, 8)).astype(np.float32), [0, 1] * 8, ["train"] * 16)
    small = dict(width=64, pred_hidden=16, target_hidden=16, proj_dim=8, batch_size=8, precision="fp32",
                 device="cpu", checkpoint_every=1)
    train(tmp_path / "s", "random16", tmp_path / "run", ScaleConfig(epochs=1, heads=2, **small), quiet=True)
    resumed = train(tmp_path / "s", "random16", tmp_path / "run", ScaleConfig(epochs=2, **small), resume=True,
                    quiet=True)  # heads derived: 64 / 32 = 2, the same model
    assert resumed.epochs == 2
    with pytest.raises(VsslError, match=r"heads \(run 2, now 4\)"):
        train(tmp_path / "s", "random16", tmp_path / "run", ScaleConfig(epochs=3, heads=4, **small), resume=True,
              quiet=True)


def test_probe_settings_from_a_file(tmp_path, capsys):
    import json

    import numpy as np

    from vssl.features_store.synthetic import make_synthetic_store

    rng = np.random.default_rng(0)
    labels = [0, 1] * 10
    feats = (rng.normal(size=(20, 3, 6)) + 3 * np.array(labels)[:, None, None]).astype(np.float32)
    make_synthetic_store(tmp_path / "s", feats, labels, ["train"] * 12 + ["test"] * 8, view="v")
    (tmp_path / "p.toml").write_text("[probe]\nview = 'v'\nknn = true\nk = 3\nlr = [0.1, 0.01]\n")
    with pytest.raises(SystemExit) as done:
        cli_main(["probe", str(tmp_path / "s"), "--config", str(tmp_path / "p.toml"), "--quiet", "--json"])
    assert done.value.code in (0, None)
    rows = json.loads(capsys.readouterr().out)["results"]
    assert [r["probe"] for r in rows] == ["knn"] and rows[0]["params"]["k"] == 3
