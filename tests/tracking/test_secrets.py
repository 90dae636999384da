"""`mask_secrets` over URL shapes, property-based: whatever the password holds, it never
survives, and nothing but the password changes."""

from __future__ import annotations

import json
import re
import shlex
import string
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import example, given
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient

from tests.services import role_with_password
from tests.sweeps.cli_helpers import invoke
from tests.trainer.test_tasks_data import regression_csv
from tracking.secrets import mask_secrets, register_url

# Anything a password may hold except quotes and line breaks (which end a URL in a
# message); spaces included.
SECRET_CHARS = st.characters(
    blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="'\"\n\r\x0b\x0c"
)
NO_SPACE = st.characters(
    blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="'\"\n\r\x0b\x0c"
)
names = st.text(string.ascii_lowercase + string.digits + "_", min_size=1, max_size=10)
schemes = st.sampled_from(["postgresql", "postgresql+psycopg", "mysql+pymysql", "http", "https"])
ports = st.sampled_from(["", ":5432", ":5000"])
reasons = st.text(string.ascii_letters + " ", max_size=20)
# A userinfo password: the query string starts at the first `?name=`, so not that.
userinfo_passwords = st.text(SECRET_CHARS, min_size=1, max_size=24).filter(
    lambda p: not re.search(r"\?[A-Za-z_][A-Za-z0-9_.\-]*=", p)
)
# A query value ends at `&` or whitespace (it is URL-encoded).
query_values = st.text(NO_SPACE, min_size=1, max_size=24).filter(lambda v: "&" not in v)
keys = st.sampled_from(["password", "PASSWORD", "passwd", "pwd", "token", "api_key", "secret"])


@example("postgresql", "u", "pa ss", "h", "", "db", "refused")
@example("postgresql", "u", "tab\there", "h", ":5432", "db", "refused")
@example("http", "u", "nb\u00a0sp@x", "h", "", "db", "")
@example("postgresql", "postgres", "Zq9/p@s:s?w d\tx", "127.0.0.1", ":1", "x", "refused")
@given(schemes, names, userinfo_passwords, names, ports, names, reasons)
def test_a_userinfo_password_is_masked_whatever_it_holds(
    scheme: str, user: str, password: str, host: str, port: str, db: str, reason: str
) -> None:
    text = f"cannot open {scheme}://{user}:{password}@{host}{port}/{db}: {reason}"
    expected = f"cannot open {scheme}://{user}:***@{host}{port}/{db}: {reason}"
    assert mask_secrets(text) == expected


@given(schemes, names, ports, names, names, keys, query_values)
def test_a_password_in_the_query_string_is_masked(
    scheme: str, host: str, port: str, db: str, user: str, key: str, value: str
) -> None:
    url = f"{scheme}://{host}{port}/{db}?user={user}&{key}={value}&sslmode=require"
    expected = f"{scheme}://{host}{port}/{db}?user={user}&{key}=***&sslmode=require"
    assert mask_secrets(f"'{url}'") == f"'{expected}'"


@given(names, query_values)
def test_a_libpq_keyword_password_is_masked(host: str, value: str) -> None:
    assert mask_secrets(f"host={host} password={value} dbname=x") == (
        f"host={host} password=*** dbname=x"
    )


@given(st.text(string.printable.replace("@", "").replace("=", ""), max_size=60))
def test_text_without_secrets_is_left_alone(text: str) -> None:
    assert mask_secrets(text) == text


def test_a_registered_password_is_masked_where_a_driver_quotes_a_piece_of_it() -> None:
    """An unencoded `@` makes a driver take part of the password for the host, and quote
    it in its own message, which no URL pattern can recognise."""
    register_url("postgresql://postgres:hunter@2024@127.0.0.1:1/db")
    message = "failed to resolve host '2024@127.0.0.1': Name or service not known"
    assert "2024" not in mask_secrets(message) and "***@127.0.0.1" in mask_secrets(message)


def test_a_text_masked_before_a_password_was_known_is_masked_after() -> None:
    """Masked texts are remembered (a study masks the same few for every trial); learning
    a password forgets them."""
    text = "failed to resolve host 'swordfish-0xC0FFEE@db.example'"
    assert mask_secrets(text) == text
    register_url("postgresql://app:pw@swordfish-0xC0FFEE@db.example:5432/sweeps")
    assert "swordfish" not in mask_secrets(text)


# Text that holds no URL, no `key=value` and no `@`: no position a secret could stand in.
plain = st.text(string.printable.replace("@", "").replace("=", "").replace(":", ""), max_size=40)


@example("postgres", "postgres-bench", "/srv/postgres/data.csv")
@given(userinfo_passwords.filter(lambda p: not re.search(r"\s", p)), plain, plain)
def test_a_known_password_is_left_alone_outside_a_url(
    password: str, before: str, after: str
) -> None:
    """Masking is by position: a study, path or param that spells a used URL's password
    is kept as it is, and the URL itself loses its password only."""
    url = f"postgresql+psycopg://app:{password}@db.example:5432/sweeps"
    register_url(url)
    text = f"{before}{password}{after}"
    if "@" not in password and "=" not in password and "://" not in text:
        assert mask_secrets(text) == text
    assert mask_secrets(f"stores:  {url} (Optuna)") == (
        "stores:  postgresql+psycopg://app:***@db.example:5432/sweeps (Optuna)"
    )


@pytest.mark.postgres
def test_a_study_path_and_param_spelling_the_password_are_stored_and_shown_verbatim(
    tmp_path: Path, postgres_url: str
) -> None:
    """The password `postgres` of a real role: the study `postgres-bench`, its csv under a
    `postgres` folder, its tags, run names and params keep every `postgres`, and the
    printed stores line loses the URL's password only."""
    (tmp_path / "postgres").mkdir()
    data = regression_csv(tmp_path / "postgres" / "data.csv", n=40)
    home = tmp_path / "home"
    with role_with_password([postgres_url], password="postgres") as role:
        url = sa.make_url(postgres_url).set(username=role, password="postgres")
        storage = url.render_as_string(hide_password=False)
        args = ["--study", "postgres-bench", "--task", "csv", "--train-csv", data, "--target"]
        args += ["y", "--penalties", "l2", "--trials", "1", "--epochs", "3", "--pruner", "none"]
        done = invoke("run", *args, "--quiet", "--home", str(home), env={"SWEEPS_STORAGE": storage})
        assert done.exit_code == 0, done.stderr
        listed = invoke("studies", "--json", "--home", str(home), env={"SWEEPS_STORAGE": storage})
    shown = f"postgresql+psycopg://{role}:***@{url.host}:{url.port}/{url.database}"
    stores = next(line for line in done.stdout.splitlines() if line.startswith("stores:"))
    assert stores.startswith(f"stores:  {shown} (Optuna, results); sqlite:///{home}/mlflow.db")
    query = f"sweeps best --study postgres-bench --home {home} --storage {shlex.quote(shown)}"
    assert query in done.stdout
    assert [s["study"] for s in json.loads(listed.stdout)] == ["postgres-bench"]

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("postgres-bench")
    assert experiment is not None
    runs = {r.data.tags["sweeps.role"]: r for r in client.search_runs([experiment.experiment_id])}
    assert runs["parent"].info.run_name == "postgres-bench"
    assert runs["parent"].data.tags["sweeps.study"] == "postgres-bench"
    assert runs["trial"].data.tags["sweeps.study"] == "postgres-bench"
    assert runs["trial"].data.params["task.train_csv"] == data
    assert runs["parent"].data.params["task.train_csv"] == data
