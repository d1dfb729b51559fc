"""Registry behaviour and argument checks: what a user sees for a bad name or value."""

from __future__ import annotations

import pytest

from edgekit.errors import BadInputError, DuplicateRegistrationError, UnknownNameError
from edgekit.models import _registry, create, get_model_spec, list_models, register_model

FAMILIES = {
    "densenet",
    "mnasnet",
    "mobilenet_v1",
    "mobilenet_v2",
    "resnet",
    "shufflenet",
    "squeezenet",
}


def test_every_family_has_canonical_and_tiny_models() -> None:
    specs = list_models(include_tiny=True)
    names = {s.name for s in specs}
    assert {s.family for s in specs} == FAMILIES
    for spec in specs:
        assert spec.description, spec.name
        if not spec.tiny:
            assert f"{spec.name}_tiny" in names, spec.name
            assert spec.canonical == {"input_shape": (224, 224, 3), "classes": 1000}
        else:
            assert spec.name.endswith("_tiny")
    assert not any(s.tiny for s in list_models())


def test_duplicate_registration_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))

    def build() -> None:
        """A stand-in builder."""

    register_model("test_duplicate_net", family="test")(build)
    with pytest.raises(DuplicateRegistrationError, match="'test_duplicate_net' is already"):
        register_model("test_duplicate_net", family="test")(build)
    with pytest.raises(DuplicateRegistrationError, match="'mobilenet_v2'"):
        register_model("mobilenet_v2", family="test")(build)


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_model_spec("mobilenet_v3")
    message = str(info.value)
    assert "unknown model 'mobilenet_v3'" in message
    for name in ("mobilenet_v2", "resnet18", "shufflenet_v2", "mnasnet_a1"):
        assert name in message
    assert "_tiny" not in message
    with pytest.raises(UnknownNameError):
        create("nope")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"width": 0}, "width must be a number > 0"),
        ({"width": -0.5}, "got -0.5"),
        ({"width": float("nan")}, "width"),
        ({"width": "1.0"}, "width"),
        ({"classes": 1}, "classes must be an integer >= 2; got 1"),
        ({"classes": 2.5}, "classes"),
        ({"input_shape": (16, 16, 3)}, "32..512 pixels per side; got 16x16"),
        ({"input_shape": (32, 1024, 3)}, "got 32x1024"),
        ({"input_shape": (32, 32)}, "input_shape must be 3 integers"),
        ({"input_shape": (32, 32, 0)}, "channels must be >= 1"),
        ({"blocks": (1, 1)}, "blocks must be 7 integers >= 1"),
        ({"blocks": (1, 1, 0, 1, 1, 1, 1)}, "blocks"),
        ({"expansion": 0}, "expansion"),
        ({"depth": 2}, "does not take these options"),
    ],
)
def test_bad_arguments_raise_one_line_bad_input(kwargs: dict, fragment: str) -> None:
    args = {"input_shape": (32, 32, 3), "classes": 10, **kwargs}
    with pytest.raises(BadInputError) as info:
        create("mobilenet_v2_tiny", **args)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "kwargs", "fragment"),
    [
        ("shufflenet_v1_tiny", {"groups": 5}, "groups must be one of [1, 2, 3, 4, 8]"),
        ("densenet121_tiny", {"compression": 1.5}, "compression must be a number in (0, 1.0]"),
        ("densenet121_tiny", {"growth_rate": 0}, "growth_rate"),
        ("squeezenet_tiny", {"squeeze_ratio": 1.0}, "squeeze_ratio"),
        ("resnet18_tiny", {"blocks": (2, 2, 2)}, "blocks must be 4 integers"),
        ("mnasnet_a1_tiny", {"blocks": (1, 1, 1)}, "blocks must be 7 integers"),
    ],
)
def test_bad_family_options(name: str, kwargs: dict, fragment: str) -> None:
    with pytest.raises(BadInputError) as info:
        create(name, input_shape=(32, 32, 3), classes=10, **kwargs)
    assert fragment in str(info.value)


def test_bad_mnasnet_block_spec_names_block_and_field() -> None:
    from edgekit.models import BlockSpec, build_mnasnet

    specs = [BlockSpec("mbconv", 3, 16, 1), BlockSpec("dilated", 4, 16, 1)]
    with pytest.raises(BadInputError) as info:
        build_mnasnet(specs, input_shape=(32, 32, 3), classes=10)
    message = str(info.value)
    assert "block 2" in message
    assert "conv_op 'dilated'" in message
    assert "kernel 4" in message
