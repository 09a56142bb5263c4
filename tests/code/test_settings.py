import pytest

from melanoma.core.settings import Settings, SettingsError


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
        ("MELANOMA_DECODE_THREADS", "0"),
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


def test_readme_table_is_the_generated_one():
    """The README's Settings table is exactly what ``python -m melanoma.core.settings`` prints, so every
    variable the code reads is documented with its one default and nothing else is."""
    from pathlib import Path

    from melanoma.core.settings import markdown_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("## Settings")
    section = readme[start : readme.index("\n## ", start + 1)]
    assert markdown_table() in section
    assert section.count("| `MELANOMA_") == len(Settings.model_fields)


def test_environment_is_read_by_the_constructor(monkeypatch):
    monkeypatch.setenv("MELANOMA_BATCH_SIZE", "8")
    monkeypatch.setenv("MELANOMA_QUEUE", "")  # empty counts as unset
    s = Settings.from_env()
    assert s.batch_size == 8 and s.queue == "melanoma" and s.prefetch_multiplier == 8
    with pytest.raises(Exception, match="frozen"):
        s.batch_size = 4  # type: ignore[misc]


def test_ranges_and_choices():
    assert Settings.from_env({"MELANOMA_TTA": "8"}).tta == 8
    assert Settings.from_env({"MELANOMA_TTA_SCALES": "1.18, 1"}).tta_scales == (1.0, 1.18)
    assert Settings.from_env({}).tta_scales == (1.0,)
    for name, value in [
        ("MELANOMA_TTA", "3"),
        ("MELANOMA_TTA_SCALES", "1.18"),  # the image as decoded is always one of the views
        ("MELANOMA_TTA_SCALES", "1,3"),
        ("MELANOMA_TTA_SCALES", "1,big"),
        ("MELANOMA_METRICS_PORT", "70000"),
        ("MELANOMA_HEARTBEAT", "0"),
    ]:
        with pytest.raises(SettingsError, match=f"^{name}: "):
            Settings.from_env({name: value})
