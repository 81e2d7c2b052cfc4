"""Settings precedence: flags > env (OAB_*, AWS_*) > file profile > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from oab.controller.core.settings import Settings, SettingsError, config_path, load_settings
from oab.controller.runtime.settings import DaemonSettingsError, load_daemon_settings

FILE = """
default_profile = "team"

[profiles.team]
region = "eu-west-1"
bucket = "team-bucket"
cluster = "team-cluster"
table_prefix = "team"
subnets = ["subnet-0abc"]

[profiles.other]
region = "ap-south-1"
bucket = "other-bucket"
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    path.write_text(FILE)
    return path


def test_defaults_without_file_or_env(tmp_path: Path) -> None:
    s = load_settings(env={}, path=tmp_path / "missing")
    assert s == Settings()
    assert s.profile == "default"
    assert s.tables.state == "oab-state"


def test_file_default_profile_is_used(cfg: Path) -> None:
    s = load_settings(env={}, path=cfg)
    assert (s.profile, s.region, s.bucket, s.cluster) == (
        "team",
        "eu-west-1",
        "team-bucket",
        "team-cluster",
    )
    assert s.subnets == ("subnet-0abc",)
    assert s.tables.lease == "team-lease"


def test_env_beats_file_and_flags_beat_env(cfg: Path) -> None:
    env = {"OAB_BUCKET": "env-bucket", "AWS_REGION": "us-west-2", "OAB_CLUSTER": "env-cluster"}
    s = load_settings(env=env, path=cfg)
    assert (s.bucket, s.region, s.cluster) == ("env-bucket", "us-west-2", "env-cluster")
    s = load_settings({"bucket": "flag-bucket", "region": None}, env=env, path=cfg)
    assert (s.bucket, s.region) == ("flag-bucket", "us-west-2")


def test_oab_variables_beat_aws_variables(tmp_path: Path) -> None:
    env = {
        "OAB_REGION": "eu-central-1",
        "AWS_REGION": "us-west-2",
        "AWS_DEFAULT_REGION": "us-east-2",
        "OAB_ENDPOINT": "http://127.0.0.1:9",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:8",
    }
    s = load_settings(env=env, path=tmp_path / "none")
    assert s.region == "eu-central-1"
    assert s.endpoint == "http://127.0.0.1:9"
    assert s.is_local


def test_profile_selection_flag_over_env(cfg: Path) -> None:
    assert load_settings(env={"OAB_PROFILE": "other"}, path=cfg).bucket == "other-bucket"
    s = load_settings({"profile": "team"}, env={"OAB_PROFILE": "other"}, path=cfg)
    assert s.bucket == "team-bucket"


def test_unknown_profile_is_an_error_naming_the_known_ones(cfg: Path) -> None:
    with pytest.raises(SettingsError, match=r"'nope' not found \(known profiles: other, team\)"):
        load_settings({"profile": "nope"}, env={}, path=cfg)


def test_unknown_key_in_profile_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text('[profiles.default]\nbukcet = "x"\n')
    with pytest.raises(SettingsError, match="bukcet"):
        load_settings(env={}, path=path)


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("[profiles.default\n")
    with pytest.raises(SettingsError, match=str(path)):
        load_settings(env={}, path=path)


def test_list_settings_from_env_are_comma_separated(tmp_path: Path) -> None:
    env = {"OAB_SUBNETS": "subnet-1, subnet-2", "OAB_SECURITY_GROUPS": "sg-1"}
    s = load_settings(env=env, path=tmp_path / "none")
    assert s.subnets == ("subnet-1", "subnet-2")
    assert s.security_groups == ("sg-1",)


def test_config_path_honours_oabctl_config(tmp_path: Path) -> None:
    assert config_path({"OABCTL_CONFIG": str(tmp_path / "x")}) == tmp_path / "x"
    assert config_path({}).name == "config"


def test_role_templates_are_validated_and_formatted() -> None:
    s = Settings()
    assert s.role_arns(namespace="ns", name="bot", account="123456789012") == (
        "arn:aws:iam::123456789012:role/oab-agent-exec-ns-bot",
        "arn:aws:iam::123456789012:role/oab-agent-task-ns-bot",
    )
    with pytest.raises(ValueError, match="role template"):
        Settings(execution_role="arn:aws:iam::{acct}:role/x")


def test_remote_endpoint_is_not_local() -> None:
    assert not Settings(endpoint="https://s3.example.com").is_local
    assert not Settings().is_local


ROLE_GLOB = "arn:aws:iam::{account}:role/oab/{namespace}/shared-*"
SECRET_GLOB = "arn:aws:ssm:{region}:{account}:parameter/oab/shared/*"


def test_allow_lists_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(f'[profiles.default]\nrole_allowlist = ["{ROLE_GLOB}"]\n')
    assert load_settings(env={}, path=path).role_allowlist == (ROLE_GLOB,)
    env = {"OAB_ROLE_ALLOWLIST": f" {ROLE_GLOB} , ", "OAB_SECRET_ALLOWLIST": SECRET_GLOB}
    s = load_settings(env=env, path=tmp_path / "none")
    assert (s.role_allowlist, s.secret_allowlist) == ((ROLE_GLOB,), (SECRET_GLOB,))
    daemon = load_daemon_settings(env=env)
    assert (daemon.role_allowlist, daemon.secret_allowlist) == ((ROLE_GLOB,), (SECRET_GLOB,))


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("OAB_ROLE_ALLOWLIST", "*"),
        ("OAB_ROLE_ALLOWLIST", SECRET_GLOB),
        ("OAB_SECRET_ALLOWLIST", ROLE_GLOB),
        ("OAB_ROLE_ALLOWLIST", "arn:aws:iam::{acct}:role/x"),
    ],
)
def test_bad_allow_list_entries_name_the_setting(tmp_path: Path, var: str, value: str) -> None:
    field = var.removeprefix("OAB_").lower()
    with pytest.raises(SettingsError, match=field):
        load_settings(env={var: value}, path=tmp_path / "none")
    with pytest.raises(DaemonSettingsError, match=field):
        load_daemon_settings(env={var: value})
