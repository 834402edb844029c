"""The pipeline benchmark's worker configurations: the default pair, or the ones given."""

from __future__ import annotations

import pytest

from benchmarks import pipeline


def test_without_config_both_default_configurations_are_measured() -> None:
    assert pipeline.parse([]).configs == ((1, 8), (2, 8))


def test_config_names_the_configurations_to_measure_in_order() -> None:
    assert pipeline.parse(["--config", "2x4", "--config", "1x16"]).configs == ((2, 4), (1, 16))


@pytest.mark.parametrize("bad", ["3", "0x8", "2x", "ax8", "2x8x1"])
def test_a_bad_config_is_refused_naming_it(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        pipeline.parse(["--config", bad])

    assert f"{bad!r} is not PROCESSESxTHREADS" in capsys.readouterr().err


def test_lean_runs_are_asked_for_with_lean() -> None:
    assert pipeline.parse([]).lean is False
    assert pipeline.parse(["--lean"]).lean is True


def test_the_lean_settings_switch_off_what_they_say(monkeypatch: pytest.MonkeyPatch) -> None:
    from config.settings import load_settings
    from middleware import OPTIONAL

    for name, value in pipeline.LEAN_ENV.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()

    assert settings.events_enabled is False
    assert settings.step_ledger is False
    assert set(settings.disabled_middleware) == {"presence", "cancel_watch"}
    assert set(settings.disabled_middleware) <= set(OPTIONAL)
