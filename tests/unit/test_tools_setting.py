"""``AGENTQ_TOOLS``: a deployment's own tools in the workers' registry, beside the built-ins."""

from __future__ import annotations

import pytest

from actors.runtime import build_tools
from config.errors import ConfigError
from config.settings import load_settings
from middleware import load_middleware

FAKE_TOOLS = "tests.fakes.tools:tools"


def test_the_named_registries_join_the_built_ins_with_their_idempotence() -> None:
    registry = build_tools((FAKE_TOOLS,))

    assert registry.names() == ("append_line", "append_line_idempotent", "calculate", "get_current_time")
    assert [registry.get(name).idempotent for name in registry.names()] == [False, True, True, True]
    assert build_tools(()).names() == ("calculate", "get_current_time")


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (("no_such_module:tools",), "AGENTQ_TOOLS='no_such_module:tools' cannot be imported"),
        (("tests.fakes.tools:nothing",), "AGENTQ_TOOLS='tests.fakes.tools:nothing' cannot be imported"),
        (
            ("tests.fakes.tools:lines",),
            "AGENTQ_TOOLS='tests.fakes.tools:lines' is a function, not a ToolRegistry",
        ),
        ((FAKE_TOOLS, FAKE_TOOLS), "tool 'append_line' is already registered"),
    ],
)
def test_a_bad_path_stops_the_process_naming_it(paths: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_tools(paths)


def test_the_setting_is_a_comma_separated_list() -> None:
    assert load_settings(tools=" a.b:c , d.e:f,").tools == ("a.b:c", "d.e:f")


def test_middleware_paths_are_imported_the_same_way() -> None:
    with pytest.raises(ConfigError, match="AGENTQ_MIDDLEWARE='no_such_module:M' cannot be imported"):
        load_middleware("no_such_module:M")
