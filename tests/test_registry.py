import os
import subprocess
import sys
import textwrap

import pytest

import compdd
from compdd import methods
from compdd.registry import Registry, UnknownNameError

PLUGIN = textwrap.dedent('''
    from compdd.methods import Method, MethodConfig

    class EchoConfig(MethodConfig):
        scale: float = 1.0

    class Echo(Method):
        name = "echo"
        description = "test plugin"
        Config = EchoConfig

        def distill(self, train, ipc, *, seed=0, device="cpu", progress=True):
            raise NotImplementedError
''')


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """An installed-looking distribution declaring a `compdd.methods` entry point."""
    (tmp_path / "echo_plugin").mkdir()
    (tmp_path / "echo_plugin" / "__init__.py").write_text(PLUGIN)
    dist = tmp_path / "echo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[compdd.methods]\necho = echo_plugin:Echo\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_entry_point_method_is_discovered_and_configurable(plugin_path):
    reg = Registry("method", methods._load)
    assert "echo" in reg.names()
    assert reg.meta("echo")["origin"] == "entry-point"
    m = reg.get("echo")(scale=2.0)
    assert m.config.scale == 2.0
    with pytest.raises(methods.ConfigError, match="known keys: scale"):
        reg.get("echo")(scael=2.0)


def test_plugin_appears_in_cli_listing(plugin_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-m", "compdd.cli", "list-methods"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert any(line.startswith("echo ") and "entry-point" in line for line in out.splitlines())


def test_broken_plugin_is_skipped_not_fatal(tmp_path, monkeypatch, caplog):
    dist = tmp_path / "broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[compdd.methods]\nbroken = no_such_module:Thing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("method", methods._load)
    assert "broken" not in reg.names()
    assert "could not load compdd.methods entry point 'broken'" in caplog.text


def test_unknown_names_list_the_known_ones():
    with pytest.raises(UnknownNameError, match=r"unknown protocol 'dd-v9'; known protocols: .*dd-v1"):
        compdd.get_protocol("dd-v9")
    r = Registry("widget")
    r.add("a", 1)
    with pytest.raises(UnknownNameError, match="known widgets: a"):
        r.get("b")


def test_registry_rejects_double_registration_and_globs():
    r = Registry("widget")
    r.add("Alpha", 1)
    r.add("beta", 2)
    with pytest.raises(ValueError, match="already registered"):
        r.add("alpha", 3)
    assert r.names("a*") == ["alpha"] and r.get("ALPHA") == 1
