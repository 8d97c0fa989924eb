"""A Flower App's pyproject.toml: components, run config, typed overrides."""

import pytest

from flower_runtime.manifest import ManifestError, fuse_run_config, read_manifest

pytestmark = pytest.mark.unit

PYPROJECT = b"""
[project]
name = "numpyapp"
version = "1.0.0"

[tool.flwr.app]
publisher = "agata"

[tool.flwr.app.components]
serverapp = "numpyapp.server_app:app"
clientapp = "numpyapp.client_app:app"

[tool.flwr.app.config]
num-server-rounds = 3
fraction-train = 0.5
local-epochs = 1
verbose = false
label = "trial"

[tool.flwr.app.config.train]
lr = 0.1
"""


def test_components_and_flattened_run_config() -> None:
    manifest = read_manifest(PYPROJECT)
    assert (manifest.name, manifest.version) == ("numpyapp", "1.0.0")
    assert manifest.serverapp == "numpyapp.server_app:app"
    assert manifest.clientapp == "numpyapp.client_app:app"
    assert manifest.run_config == {"num-server-rounds": 3, "fraction-train": 0.5,
                                   "local-epochs": 1, "verbose": False, "label": "trial",
                                   "train.lr": 0.1}


def test_overrides_take_the_type_of_their_default() -> None:
    defaults = read_manifest(PYPROJECT).run_config
    fused = fuse_run_config(defaults, {"num-server-rounds": "5", "fraction-train": 1,
                                       "verbose": "true", "label": 7, "train.lr": "0.01"})
    assert fused["num-server-rounds"] == 5 and isinstance(fused["num-server-rounds"], int)
    assert fused["fraction-train"] == 1.0 and isinstance(fused["fraction-train"], float)
    assert fused["verbose"] is True
    assert fused["label"] == "7"
    assert fused["train.lr"] == 0.01
    assert fused["local-epochs"] == 1


def test_unknown_keys_are_named_with_the_known_ones() -> None:
    defaults = read_manifest(PYPROJECT).run_config
    with pytest.raises(ManifestError) as info:
        fuse_run_config(defaults, {"num-rounds": 5, "lr": 1})
    message = str(info.value)
    assert "lr, num-rounds" in message and "num-server-rounds" in message


@pytest.mark.parametrize(("override", "says"), [
    ({"num-server-rounds": "five"}, "takes a int"),
    ({"num-server-rounds": True}, "takes a int"),
    ({"verbose": "maybe"}, "takes a bool"),
    ({"fraction-train": "x"}, "takes a float"),
])
def test_values_that_do_not_fit_are_refused(override, says) -> None:
    with pytest.raises(ManifestError, match=says):
        fuse_run_config(read_manifest(PYPROJECT).run_config, override)


@pytest.mark.parametrize(("content", "says"), [
    (b"not = [toml", "not valid TOML"),
    (b"[project]\nname='x'\n", "[tool] table"),
    (b"[tool.flwr.app.components]\nserverapp='a.b:app'\n", "clientapp must name"),
    (b"[tool.flwr.app.components]\nserverapp='a.b'\nclientapp='a.c:app'\n", "serverapp must"),
    (b"[tool.flwr.app.components]\nserverapp='a:b'\nclientapp='a:c'\n"
     b"[tool.flwr.app.config]\nx=[1,2]\n", "booleans, numbers or strings"),
])
def test_bad_manifests_say_what_is_wrong(content, says) -> None:
    with pytest.raises(ManifestError) as info:
        read_manifest(content)
    assert says in str(info.value), str(info.value)
