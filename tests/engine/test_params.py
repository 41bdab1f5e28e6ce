"""engine.params: AML's sgd.* training parameters."""

from __future__ import annotations

import pytest

from amlflow.engine.errors import ParameterError
from amlflow.engine.params import TrainingParameters, parse_parameters


def test_parse_parameters_defaults_follow_the_api_model() -> None:
    p = parse_parameters(None)
    assert (p.max_model_size, p.max_passes, p.shuffle_type, p.l1, p.l2) == (33_554_432, 10, "none", 0.0, 0.0)
    assert p.echo() == {
        "algorithm": "sgd",
        "sgd.maxMLModelSizeInBytes": "33554432",
        "sgd.maxPasses": "10",
        "sgd.shuffleType": "none",
        "sgd.l1RegularizationAmount": "0.0",
        "sgd.l2RegularizationAmount": "0.0",
    }
    assert parse_parameters({}) == p


def test_parse_parameters_console_values_echoed_verbatim() -> None:
    given = {
        "sgd.maxPasses": "10",
        "sgd.l2RegularizationAmount": "1e-6",
        "sgd.shuffleType": "auto",
        "sgd.maxMLModelSizeInBytes": "104857600",
        "sgd.l1RegularizationAmount": "0.0",
    }
    p = parse_parameters(given)
    assert (p.max_model_size, p.max_passes, p.shuffle_type, p.l1, p.l2) == (104857600, 10, "auto", 0.0, 1e-6)
    assert p.echo() == {"algorithm": "sgd", **given}
    assert TrainingParameters.from_json(p.to_json()) == p


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        (
            {"sgd.maxPass": "10"},
            "unknown key 'sgd.maxPass' (allowed: sgd.maxMLModelSizeInBytes, sgd.maxPasses",
        ),
        ({"sgd.maxPasses": "0"}, "sgd.maxPasses: '0' is out of range (expected 1..10,000)"),
        ({"sgd.maxPasses": "10001"}, "sgd.maxPasses: '10001' is out of range"),
        ({"sgd.maxPasses": "ten"}, "sgd.maxPasses: 'ten' is not an integer"),
        ({"sgd.maxPasses": "2.5"}, "sgd.maxPasses: '2.5' is not an integer"),
        ({"sgd.maxMLModelSizeInBytes": "99999"}, "sgd.maxMLModelSizeInBytes: '99999' is out of range"),
        ({"sgd.maxMLModelSizeInBytes": "2147483649"}, "expected 100,000..2,147,483,648"),
        ({"sgd.shuffleType": "random"}, "sgd.shuffleType: 'random' is not one of auto, none"),
        ({"sgd.l2RegularizationAmount": "-1"}, "sgd.l2RegularizationAmount: '-1' is out of range"),
        ({"sgd.l1RegularizationAmount": "nan"}, "sgd.l1RegularizationAmount: 'nan' is out of range"),
        ({"sgd.l1RegularizationAmount": "x"}, "sgd.l1RegularizationAmount: 'x' is not a number"),
        ({"sgd.l1RegularizationAmount": "1e-8", "sgd.l2RegularizationAmount": "1e-6"}, "mutually exclusive"),
        ({"sgd.maxPasses": 10}, "sgd.maxPasses: expected a string value"),
    ],
)
def test_parse_parameters_rejects_bad_values(params: dict[str, str], needle: str) -> None:
    with pytest.raises(ParameterError) as err:
        parse_parameters(params)
    assert needle in err.value.message


def test_parse_parameters_field_names_the_key() -> None:
    with pytest.raises(ParameterError) as err:
        parse_parameters({"sgd.maxPasses": "0"})
    assert err.value.field == "sgd.maxPasses"


def test_parse_parameters_accepts_whole_float_and_zero_other_regularisation() -> None:
    p = parse_parameters(
        {"sgd.maxPasses": "100.0", "sgd.l1RegularizationAmount": "0", "sgd.l2RegularizationAmount": "1e-4"}
    )
    assert (p.max_passes, p.l1, p.l2) == (100, 0.0, 1e-4)
