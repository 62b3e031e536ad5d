import pytest

from labvault.config import Settings
from labvault.errors import ConfigError


def test_defaults_and_environment(tmp_path):
    s = Settings.from_env({})
    assert str(s.home) == ".labvault" and s.is_sqlite and s.url.endswith("/.labvault/labvault.db")
    s = Settings.from_env(
        {"LABVAULT_HOME": str(tmp_path), "LABVAULT_DATABASE_URL": "postgresql://u@h/db", "LABVAULT_PASSPHRASE": "pw"}
    )
    assert s.url == "postgresql://u@h/db" and s.passphrase == "pw" and not s.is_sqlite
    assert "pw" not in repr(s)


def test_toml_file_and_precedence(tmp_path):
    (tmp_path / "labvault.toml").write_text('[labvault]\ndatabase_url = "sqlite:///x.db"\nkey_provider = "pkcs11"\n')
    s = Settings.from_env({"LABVAULT_HOME": str(tmp_path)})
    assert s.url == "sqlite:///x.db" and s.key_provider == "pkcs11"
    s = Settings.from_env({"LABVAULT_HOME": str(tmp_path), "LABVAULT_KEY_PROVIDER": "local"})
    assert s.key_provider == "local"


@pytest.mark.parametrize(
    "content", ["not = [toml", '[labvault]\npassphrase = "in a file"\n', '[labvault]\nkey_provider = "cloud"\n']
)
def test_bad_toml_is_a_clear_error(tmp_path, content):
    (tmp_path / "labvault.toml").write_text(content)
    with pytest.raises(ConfigError):
        Settings.from_env({"LABVAULT_HOME": str(tmp_path)})


def test_missing_named_config(tmp_path):
    with pytest.raises(ConfigError):
        Settings.from_env({"LABVAULT_CONFIG": str(tmp_path / "nope.toml")})
