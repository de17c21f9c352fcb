"""stylecore.config: one reader for every settings object, the training settings of a grid cell, one knob per value."""

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from stylecore.config import (ConfigError, DataConfig, TrainConfig, apply_weights, from_mapping, integer, one_of,
                              optional, setting, training_settings)

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Section:
    count: int = setting(integer(1))
    mode: str = setting(one_of("min", "max"))
    limit: int | None = setting(optional(integer(0)), None)


def test_a_section_is_built_only_from_known_complete_valid_keys():
    assert from_mapping(Section, {"count": 3, "mode": "max"}, "params.yaml: demo") == Section(3, "max", None)
    with pytest.raises(ConfigError, match=r"params.yaml: demo has unknown key\(s\) cuont; its keys: count, mode, limit"):
        from_mapping(Section, {"cuont": 3, "count": 1, "mode": "min"}, "params.yaml: demo")
    with pytest.raises(ConfigError, match="params.yaml: demo lacks mode; give every key a value"):
        from_mapping(Section, {"count": 3}, "params.yaml: demo")
    with pytest.raises(ConfigError, match=r"params.yaml: demo.count=0 is invalid; it must be a positive integer"):
        from_mapping(Section, {"count": 0, "mode": "min"}, "params.yaml: demo")
    with pytest.raises(ConfigError, match=r"demo.count=True is invalid"):  # a bool is not a count
        from_mapping(Section, {"count": True, "mode": "min"}, "demo")
    with pytest.raises(ConfigError, match=r"demo.mode='mean' is invalid; it must be one of min, max"):
        from_mapping(Section, {"count": 1, "mode": "mean"}, "demo")
    with pytest.raises(ConfigError, match=r"demo.limit=-1 is invalid; it must be null or an integer ≥ 0"):
        from_mapping(Section, {"count": 1, "mode": "min", "limit": -1}, "demo")


def test_the_data_config_checks_its_values_and_their_relation():
    assert DataConfig().crop_size == 256 and DataConfig().flip is False
    with pytest.raises(ConfigError, match="load_size=32 is smaller than crop_size=64"):
        from_mapping(DataConfig, {"crop_size": 64, "load_size": 32}, "data config")
    with pytest.raises(ConfigError, match=r"loader_workers=-1 is invalid; it must be an integer ≥ 0"):
        from_mapping(DataConfig, {"loader_workers": -1}, "data config")


def test_a_style_setting_given_in_two_places_is_an_error_naming_both_keys():
    with pytest.raises(ValueError, match=r"style_params.weight and objective.style both set the style term's weight"):
        TrainConfig.from_dict({"model": "adain", "style_params": {"weight": 2.0}, "objective": {"style": 5.0}})
    with pytest.raises(ValueError, match=r"style_params.layers and objective.style.layers both set"):
        TrainConfig.from_dict({"model": "adain", "style_params": {"layers": ["relu1_1"]},
                               "objective": {"style": {"layers": ["relu2_1"]}}})
    with pytest.raises(ValueError, match="objective.style: null drops the style term that style_params"):
        TrainConfig.from_dict({"model": "adain", "style_params": {"weight": 2.0}, "objective": {"style": None}})
    # one place each is fine, and so are the two knobs on different settings
    TrainConfig.from_dict({"model": "adain", "style_params": {"weight": 2.0}, "objective": {"content": 3.0}})
    TrainConfig.from_dict({"model": "adain", "style_params": {"layers": ["relu1_1"]}, "objective": {"style": 4.0}})


def test_one_weights_switch_sets_every_pretrained_part_the_model_has_unless_named():
    assert apply_weights("magenta", {}, "random:1") == {"encoder_weights": "random:1", "predictor_weights": "random:1"}
    assert apply_weights("adain", {}, "random:1") == {"encoder_weights": "random:1"}  # no predictor in AdaIN
    assert apply_weights("magenta", {"predictor_weights": "p.safetensors"}, "imagenet") == {
        "encoder_weights": "imagenet", "predictor_weights": "p.safetensors"}
    assert apply_weights("adain", {"x": 1}, None) == {"x": 1}


def test_training_settings_merge_profile_model_and_loss_in_that_order_and_split_them():
    section = {"profiles": {"demo": {"steps": 5, "batch_size": 2, "crop_size": 32, "flip": True, "report_every": 3,
                                     "weights": "random:0", "lr": 1e-4}},
               "models": {"magenta": {"lr": 1e-3, "model_params": {"predictor": "mobilenet_v2"}}},
               "losses": {"balanced_gram": {"lr": 5e-4, "style_params": {"weight": 3.0}}}}
    settings = training_settings(section, "magenta", "balanced_gram", "demo", extra_keys=("report_every",))
    assert settings.train.lr == 5e-4 and settings.train.steps == 5 and settings.train.style_loss == "balanced_gram"
    assert settings.train.model_params == {"predictor": "mobilenet_v2", "encoder_weights": "random:0",
                                           "predictor_weights": "random:0"}
    assert settings.data == DataConfig(batch_size=2, crop_size=32, flip=True)
    assert settings.extra == {"report_every": 3} and settings.weights == "random:0"
    with pytest.raises(ConfigError, match=r"report_every \(from profiles.demo ← models.magenta ← losses.gram\) is not"):
        training_settings({**section, "losses": {"gram": {}}}, "magenta", "gram", "demo")  # no extra keys here
    with pytest.raises(ConfigError, match="profiles has no entry for profile 'full'; defined: demo"):
        training_settings(section, "magenta", "gram", "full")


def test_the_repository_params_read_as_typed_settings_for_every_combination_of_the_grid():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for profile in params["profiles"]:
        for model in params["train"]["grid"]["models"]:
            for loss in params["train"]["grid"]["losses"]:
                settings = training_settings(params["train"], model, loss, profile, extra_keys=("report_every",))
                assert settings.train.model == model and settings.train.style_loss == loss
                assert settings.data.flip is True  # the pipeline's workers flip, as they always did
