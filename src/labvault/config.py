"""Settings from the environment and an optional TOML file: one object, passed down, no globals.

Precedence: environment variables, then ``$LABVAULT_CONFIG`` (or ``$LABVAULT_HOME/labvault.toml``),
then defaults. The passphrase is never read from the TOML file.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from labvault.errors import ConfigError

_KEYS = {
    "database_url": "LABVAULT_DATABASE_URL",
    "key_provider": "LABVAULT_KEY_PROVIDER",
    "pkcs11_module": "LABVAULT_PKCS11_MODULE",
    "pkcs11_token": "LABVAULT_PKCS11_TOKEN",
    "pkcs11_pin": "LABVAULT_PKCS11_PIN",
    "test_mode": "LABVAULT_TEST_MODE",
    "public_base_url": "LABVAULT_PUBLIC_BASE_URL",
    # Alerts (labvault.monitoring.notify): the SMTP relay e-mails go through, and the
    # acknowledgement deadlines by severity (``critical=15,high=60,medium=240,low=1440``, minutes).
    "smtp_host": "LABVAULT_SMTP_HOST",
    "smtp_port": "LABVAULT_SMTP_PORT",
    "smtp_from": "LABVAULT_SMTP_FROM",
    "smtp_starttls": "LABVAULT_SMTP_STARTTLS",
    "smtp_user": "LABVAULT_SMTP_USER",
    "alert_ack_minutes": "LABVAULT_ALERT_ACK_MINUTES",
    # Channels (labvault.monitoring.targets): off by default, a channel's webhook or syslog target
    # must resolve to public internet addresses only; on, any address (and http://) is accepted.
    "channels_allow_private": "LABVAULT_CHANNELS_ALLOW_PRIVATE",
}
_BOOLS = ("1", "true", "yes", "0", "false", "no", "")
DEFAULT_PUBLIC_BASE_URL = "http://127.0.0.1:8000"  # what `labvault serve` listens on by default
# scheme://host[:port][/path]: no user info, query, fragment or whitespace
_BASE_URL = re.compile(
    r"https?://[A-Za-z0-9.\-]+(?::\d{1,5})?(?:/[A-Za-z0-9._~\-/%]*)?\Z|"
    r"https?://\[[0-9A-Fa-f:.]+\](?::\d{1,5})?(?:/[A-Za-z0-9._~\-/%]*)?\Z"
)


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=lambda: Path(".labvault"))
    database_url: str | None = None
    passphrase: str | None = field(default=None, repr=False)
    key_provider: str = "local"  # "local" (keyring file) or "pkcs11" (HSM)
    pkcs11_module: str = "/usr/lib/softhsm/libsofthsm2.so"
    pkcs11_token: str = "labvault"
    pkcs11_pin: str | None = field(default=None, repr=False)
    # Test mode accepts the INS test OID (1.2.250.1.213.1.4.10) at ingest; never set in production.
    test_mode: bool = False
    # The address clients reach the API at: every link the API writes (FHIR fullUrl, Bundle.link) is
    # built on it, never on the Host header of a request (which a client chooses).
    public_base_url: str = DEFAULT_PUBLIC_BASE_URL
    # Alerts by e-mail: the relay (none: e-mail channels fail and are retried), the sender,
    # STARTTLS before anything is sent, and an account on the relay (its password from
    # LABVAULT_SMTP_PASSWORD only, never from the TOML file).
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "labvault@localhost"
    smtp_starttls: bool = False
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    alert_ack_minutes: str | None = None
    # Private targets for channels: off (the default), every channel's webhook (https only) and
    # syslog host must resolve to public internet addresses, checked when the channel is added and
    # again before each send. On, for every channel of the deployment (the platform's and every
    # lab's): a private, loopback or link-local address and a plain http:// webhook are accepted;
    # for tests and for a deployment whose every lab admin the operator trusts with its network.
    channels_allow_private: bool = False

    @property
    def keyring_path(self) -> Path:
        return self.home / "keyring.json"

    @property
    def url(self) -> str:
        """The database URL; by default a SQLite file in the home."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'labvault.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        env = dict(os.environ if environ is None else environ)
        home = Path(env.get("LABVAULT_HOME") or ".labvault")
        values: dict[str, object] = {"home": home}
        cfg_path = Path(env["LABVAULT_CONFIG"]) if env.get("LABVAULT_CONFIG") else home / "labvault.toml"
        if cfg_path.is_file():
            try:
                data = tomllib.loads(cfg_path.read_text("utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{cfg_path}: not valid TOML ({exc})") from None
            section = data.get("labvault", data)
            unknown = set(section) - set(_KEYS)
            if unknown:
                raise ConfigError(f"{cfg_path}: unknown setting(s) {', '.join(sorted(unknown))}")
            values.update(section)
        elif env.get("LABVAULT_CONFIG"):
            raise ConfigError(f"LABVAULT_CONFIG names {cfg_path}, which does not exist")
        for attr, var in _KEYS.items():
            if env.get(var):
                values[attr] = env[var]
        if env.get("LABVAULT_PASSPHRASE"):
            values["passphrase"] = env["LABVAULT_PASSPHRASE"]
        if env.get("LABVAULT_SMTP_PASSWORD"):
            values["smtp_password"] = env["LABVAULT_SMTP_PASSWORD"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        mode = values.get("test_mode", False)
        if isinstance(mode, str):
            if mode.strip().lower() not in ("0", "1", "true", "false", "yes", "no", ""):
                raise ConfigError("LABVAULT_TEST_MODE must be 1/true/yes or 0/false/no")
            values["test_mode"] = mode.strip().lower() in ("1", "true", "yes")
        elif not isinstance(mode, bool):
            raise ConfigError("test_mode must be true or false")
        starttls = values.get("smtp_starttls", False)
        if isinstance(starttls, str):
            if starttls.strip().lower() not in _BOOLS:
                raise ConfigError("LABVAULT_SMTP_STARTTLS must be 1/true/yes or 0/false/no")
            values["smtp_starttls"] = starttls.strip().lower() in ("1", "true", "yes")
        elif not isinstance(starttls, bool):
            raise ConfigError("smtp_starttls must be true or false")
        allow = values.get("channels_allow_private", False)
        if isinstance(allow, str):
            if allow.strip().lower() not in _BOOLS:
                raise ConfigError("LABVAULT_CHANNELS_ALLOW_PRIVATE must be 1/true/yes or 0/false/no")
            values["channels_allow_private"] = allow.strip().lower() in ("1", "true", "yes")
        elif not isinstance(allow, bool):
            raise ConfigError("channels_allow_private must be true or false")
        if "smtp_port" in values:
            try:
                port = int(str(values["smtp_port"]))
            except ValueError:
                raise ConfigError("LABVAULT_SMTP_PORT must be a port number") from None
            if not 1 <= port <= 65535:
                raise ConfigError("LABVAULT_SMTP_PORT must be a port number")
            values["smtp_port"] = port
        if values.get("key_provider", "local") not in ("local", "pkcs11"):
            raise ConfigError("LABVAULT_KEY_PROVIDER must be 'local' or 'pkcs11'")
        if "public_base_url" in values:
            values["public_base_url"] = check_public_base_url(values["public_base_url"])
        return cls(**values)  # type: ignore[arg-type]


def check_public_base_url(value: object) -> str:
    """The public base URL without its trailing slash; ``ConfigError`` unless it is an http(s) URL
    made of scheme, host, optional port and path."""
    if not isinstance(value, str) or not _BASE_URL.match(value.strip()):
        raise ConfigError(
            "LABVAULT_PUBLIC_BASE_URL must be an http:// or https:// URL: scheme, host, optional "
            "port and path (e.g. https://labvault.example.org), no query or fragment"
        )
    return value.strip().rstrip("/")
