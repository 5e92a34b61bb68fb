//! Tests for the CRM sections: `[salesforce]` flows, HubSpot OAuth, and one CRM at a time.

use super::*;

fn load_str(toml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("prmsync.toml");
    std::fs::write(&path, toml).expect("write config");
    let env = Environment {
        vars: vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    load(&path, &env)
}

const PRM: &str = "[partnerstack]\napi_key = { env = \"PS\" }\n";

fn keys(e: &ConfigErrors) -> Vec<&str> {
    e.errors.iter().map(|e| e.key.as_str()).collect()
}

#[test]
fn salesforce_refresh_token_flow_loads() {
    let c = load_str(
        &format!(
            "{PRM}[salesforce]\nauth = \"refresh_token\"\nclient_id = \"3MVG9\"\nclient_secret = {{ env = \"SFS\" }}\nrefresh_token = {{ env = \"SFR\" }}\n"
        ),
        &[("PS", "k"), ("SFS", "s"), ("SFR", "r")],
    )
    .expect("valid");
    let CrmConfig::Salesforce(sf) = c.crm else {
        panic!("Salesforce expected")
    };
    assert_eq!(sf.login_url.as_str(), "https://login.salesforce.com/");
    assert!(
        matches!(sf.auth, SalesforceAuthConfig::RefreshToken { ref client_id, .. } if client_id == "3MVG9")
    );
}

#[test]
fn salesforce_jwt_needs_a_username_and_a_key() {
    let e = load_str(
        &format!("{PRM}[salesforce]\nauth = \"jwt_bearer\"\nclient_id = \"3MVG9\"\n"),
        &[("PS", "k")],
    )
    .expect_err("incomplete");
    assert_eq!(
        keys(&e),
        vec!["salesforce.username", "salesforce.private_key"]
    );
}

#[test]
fn one_crm_at_a_time_and_known_auth_names() {
    let e = load_str(
        &format!(
            "{PRM}[hubspot]\naccess_token = {{ env = \"HS\" }}\n[salesforce]\nauth = \"password\"\nclient_id = \"x\"\n"
        ),
        &[("PS", "k"), ("HS", "t")],
    )
    .expect_err("two CRMs");
    assert_eq!(keys(&e), vec!["salesforce"]);
    let e = load_str(
        &format!("{PRM}[salesforce]\nauth = \"password\"\nclient_id = \"x\"\n"),
        &[("PS", "k")],
    )
    .expect_err("unknown auth");
    assert_eq!(keys(&e), vec!["salesforce.auth"]);
}

#[test]
fn hubspot_oauth_replaces_the_access_token() {
    let c = load_str(
        &format!(
            "{PRM}[hubspot]\nclient_id = \"app\"\nclient_secret = {{ env = \"HSS\" }}\nrefresh_token = {{ env = \"HSR\" }}\n"
        ),
        &[("PS", "k"), ("HSS", "s"), ("HSR", "r")],
    )
    .expect("valid");
    let CrmConfig::HubSpot(h) = c.crm else {
        panic!("HubSpot expected")
    };
    assert_eq!(h.oauth.map(|o| o.client_id).as_deref(), Some("app"));
    let e = load_str(
        &format!("{PRM}[hubspot]\nclient_id = \"app\"\n"),
        &[("PS", "k")],
    )
    .expect_err("half OAuth");
    assert_eq!(
        keys(&e),
        vec!["hubspot.refresh_token", "hubspot.access_token"]
    );
}

#[test]
fn salesforce_jwt_key_is_checked_at_load() {
    let e = load_str(
        &format!(
            "{PRM}[salesforce]\nauth = \"jwt_bearer\"\nclient_id = \"3MVG9\"\nusername = \"u@example.com\"\nprivate_key = {{ env = \"KEY\" }}\n"
        ),
        &[("PS", "k"), ("KEY", "not a key")],
    )
    .expect_err("bad key");
    assert_eq!(keys(&e), vec!["salesforce.private_key"]);
    assert!(e.errors[0].message.contains("no PEM block"));
}

#[test]
fn hubspot_rate_limit_is_a_tier_and_must_be_positive() {
    let with = |limit: &str| {
        load_str(
            &format!("{PRM}[hubspot]\naccess_token = {{ env = \"HS\" }}\nrate_limit = {limit}\n"),
            &[("PS", "k"), ("HS", "t")],
        )
    };
    let c = with("{ requests = 190, window_ms = 10000 }").expect("valid");
    let CrmConfig::HubSpot(h) = c.crm else {
        panic!("HubSpot expected")
    };
    assert_eq!(
        h.rate_limit,
        Some(crate::connector::Rate {
            n: 190,
            per: Duration::from_secs(10)
        })
    );
    let e = with("{ requests = 0, window_ms = 10000 }").expect_err("zero");
    assert_eq!(keys(&e), vec!["hubspot.rate_limit"]);
    assert!(with("{ requests = 10, per = 1 }").is_err(), "unknown key");
}

#[test]
fn partnerstack_and_salesforce_rate_limits_load_and_must_be_positive() {
    let sf = "[salesforce]\nauth = \"refresh_token\"\nclient_id = \"3MVG9\"\nclient_secret = { env = \"SFS\" }\nrefresh_token = { env = \"SFR\" }\n";
    let vars = [("PS", "k"), ("SFS", "s"), ("SFR", "r")];
    let with = |ps: &str, sf_limit: &str| {
        load_str(
            &format!("{PRM}rate_limit = {ps}\n{sf}rate_limit = {sf_limit}\n"),
            &vars,
        )
    };
    let c = with(
        "{ requests = 50, window_ms = 1000 }",
        "{ requests = 40, window_ms = 2000 }",
    )
    .expect("valid");
    let (PrmConfig::PartnerStack(p), CrmConfig::Salesforce(s)) = (c.prm, c.crm) else {
        panic!("PartnerStack and Salesforce expected")
    };
    let rate = |n, ms| {
        Some(crate::connector::Rate {
            n,
            per: Duration::from_millis(ms),
        })
    };
    assert_eq!(p.rate_limit, rate(50, 1000));
    assert_eq!(s.rate_limit, rate(40, 2000));
    let e = with(
        "{ requests = 0, window_ms = 1000 }",
        "{ requests = 40, window_ms = 0 }",
    )
    .expect_err("zeros");
    assert_eq!(
        keys(&e),
        vec!["partnerstack.rate_limit", "salesforce.rate_limit"]
    );
}
