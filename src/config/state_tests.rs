//! `[state]` tests: a PostgreSQL URL written plainly or read as a systemd credential, its schema,
//! and clear errors for a wrong URL or schema.

use std::io::Write as _;

use super::*;

fn load_text(
    dir: &tempfile::TempDir,
    extra: &str,
    vars: &[(&str, &str)],
) -> Result<Config, ConfigErrors> {
    let p = dir.path().join("prmsync.toml");
    let mut f = std::fs::File::create(&p).expect("create");
    let text = format!(
        "[partnerstack]\napi_key = {{ env = \"PS_KEY\" }}\n[hubspot]\naccess_token = {{ env = \"HS_TOKEN\" }}\n{extra}"
    );
    f.write_all(text.as_bytes()).expect("write");
    let mut env = Environment::default();
    for (k, v) in [("PS_KEY", "k"), ("HS_TOKEN", "t")].iter().chain(vars) {
        env.vars.insert((*k).to_owned(), (*v).to_owned());
    }
    load(&p, &env)
}

#[test]
fn without_a_state_section_the_state_is_the_sqlite_file() {
    let dir = tempfile::tempdir().expect("dir");
    let c = load_text(&dir, "", &[]).expect("loads");
    assert!(c.state.postgres.is_none());
}

#[test]
fn a_plain_url_gets_the_default_schema() {
    let dir = tempfile::tempdir().expect("dir");
    let c = load_text(
        &dir,
        "[state]\nurl = \"postgres://prmsync@db:5432/prmsync\"\n",
        &[],
    )
    .expect("loads");
    let pg = c.state.postgres.expect("postgres");
    assert_eq!(pg.url, "postgres://prmsync@db:5432/prmsync");
    assert_eq!(pg.schema, defaults::STATE_SCHEMA);
    assert!(
        !format!("{pg:?}").contains("db:5432"),
        "the URL never prints"
    );
}

#[test]
fn the_url_comes_from_a_systemd_credential() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("state_url"),
        "postgres://prmsync:pw@db/prmsync\n",
    )
    .expect("credential");
    let creds = dir.path().to_str().expect("utf-8").to_owned();
    let c = load_text(
        &dir,
        "[state]\nurl = { credential = \"state_url\" }\nschema = \"tenant_a\"\n",
        &[("CREDENTIALS_DIRECTORY", &creds)],
    )
    .expect("loads");
    let pg = c.state.postgres.expect("postgres");
    assert_eq!(pg.url, "postgres://prmsync:pw@db/prmsync");
    assert_eq!(pg.schema, "tenant_a");
}

#[test]
fn a_wrong_url_or_schema_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let e = load_text(&dir, "[state]\nurl = \"mysql://db\"\n", &[]).expect_err("refused");
    assert!(
        e.errors
            .iter()
            .any(|e| e.key == "state.url" && e.message.contains("postgres://")),
        "{e}"
    );
    let e = load_text(
        &dir,
        "[state]\nurl = \"postgres://db/x\"\nschema = \"Drop Table\"\n",
        &[],
    )
    .expect_err("refused");
    assert!(e.errors.iter().any(|e| e.key == "state.schema"), "{e}");
    let e = load_text(&dir, "[state]\nschema = \"a\"\n", &[]).expect_err("refused");
    assert!(
        e.errors
            .iter()
            .any(|e| e.message.contains("without state.url")),
        "{e}"
    );
}
