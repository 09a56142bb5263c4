import pytest

from melanoma.settings import Settings, SettingsError


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({})
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert s.database_url == f"sqlite:///{tmp_path / 'var' / 'melanoma.db'}"
    assert s.allowed_roots == (tmp_path.resolve(),)
    assert s.batch_size == 32
    assert s.prefetch_multiplier == 32 and s.images_per_message == 8
    assert (s.model_dir / "current").is_file()  # the shipped registry


def test_environment_overrides(tmp_path):
    env = {
        "MELANOMA_BROKER_URL": "redis://:secret@redis:6379/2",
        "MELANOMA_DATABASE_URL": "postgresql+psycopg://u:pw@db/melanoma",
        "MELANOMA_MODEL_DIR": str(tmp_path / "models"),
        "MELANOMA_ALLOWED_ROOTS": f"{tmp_path / 'a'}:{tmp_path / 'b'}",
        "MELANOMA_BATCH_SIZE": "16",
        "MELANOMA_BATCH_WAIT": "0.5",
        "MELANOMA_PRECISION": "mixed_bfloat16",
    }
    s = Settings.from_env(env)
    assert s.precision == "mixed_bfloat16" and Settings.from_env({}).precision == "float32"
    assert s.broker_url.endswith("/2")
    assert s.allowed_roots == ((tmp_path / "a").resolve(), (tmp_path / "b").resolve())
    assert s.batch_size == 16 and s.batch_wait == 0.5 and s.prefetch_multiplier == 16
    assert s.model_dir == (tmp_path / "models").resolve()
    assert "pw" not in s.redacted_database_url()


@pytest.mark.parametrize(
    "name,value",
    [
        ("MELANOMA_BATCH_SIZE", "many"),
        ("MELANOMA_BATCH_SIZE", "0"),
        ("MELANOMA_BATCH_WAIT", "-1"),
        ("MELANOMA_PRECISION", "float16"),
    ],
)
def test_bad_values_are_one_line_errors(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_passwords_from_secret_files(tmp_path):
    import redis
    from sqlalchemy.engine import make_url

    secret = tmp_path / "pw"
    secret.write_text("p@ss:w/rd\n")
    s = Settings.from_env(
        {
            "MELANOMA_DATABASE_URL": "postgresql+psycopg://melanoma@db:5432/melanoma",
            "MELANOMA_DATABASE_PASSWORD_FILE": str(secret),
            "MELANOMA_BROKER_URL": "redis://redis:6379/0",
            "MELANOMA_BROKER_PASSWORD_FILE": str(secret),
        }
    )
    assert make_url(s.database_url).password == "p@ss:w/rd"
    assert make_url(s.database_url).username == "melanoma"
    assert redis.Redis.from_url(s.broker_url).connection_pool.connection_kwargs["password"] == "p@ss:w/rd"
    assert "p@ss" not in s.redacted_database_url()
    with pytest.raises(SettingsError, match="cannot read"):
        Settings.from_env({"MELANOMA_BROKER_PASSWORD_FILE": str(tmp_path / "missing")})


def test_readme_documents_exactly_the_settings_the_code_reads():
    """Every MELANOMA_ variable settings.py reads has a row in the README's Settings table (secrets
    as <NAME>_FILE), and the table names no variable the code does not read."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = set(re.findall(r'"(MELANOMA_[A-Z_]+)"', (root / "melanoma" / "settings.py").read_text()))
    code = {f"{name}_FILE" if name.endswith("_PASSWORD") else name for name in code}
    readme = (root / "README.md").read_text()
    table = readme[readme.index("## Settings") : readme.index("## Database")]
    documented = set(re.findall(r"^\| `(MELANOMA_[A-Z_]+)`", table, flags=re.M))
    assert code == documented, {"undocumented": code - documented, "not read": documented - code}
