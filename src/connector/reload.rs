//! A connector's credential as a reload sees it: a fingerprint that tells whether the config
//! now names another one, and taking the new one over in the running client.

use super::Connector;

impl Connector {
    /// A digest of the credential this connector sends (never the secret itself).
    pub fn credential_fingerprint(&self) -> String {
        match self {
            Connector::PartnerStack(c) => c.credential_fingerprint(),
            Connector::HubSpot(c) => c.credential_fingerprint(),
            Connector::Salesforce(c) => c.credential_fingerprint(),
            Connector::Rest(c) => c.credential_fingerprint(),
        }
    }

    /// Takes `fresh`'s credential over when it differs from the one in use; returns whether it
    /// did. `fresh` is a connector built from the reloaded config; one of another system is
    /// ignored. The credential brings its budgets: the pacer spends from new ones with `fresh`'s
    /// limits (its tier's `rate_limit`), and a hold in force stays ([`super::Pacer::renew`]).
    /// URLs and other settings stay as they were started.
    pub async fn adopt_credentials(&self, fresh: &Connector) -> bool {
        if self.kind() != fresh.kind()
            || self.credential_fingerprint() == fresh.credential_fingerprint()
        {
            return false;
        }
        match (self, fresh) {
            (Connector::PartnerStack(c), Connector::PartnerStack(f)) => c.adopt_credentials(f),
            (Connector::HubSpot(c), Connector::HubSpot(f)) => c.adopt_credentials(f),
            (Connector::Salesforce(c), Connector::Salesforce(f)) => c.adopt_credentials(f).await,
            (Connector::Rest(c), Connector::Rest(f)) => c.adopt_credentials(f),
            _ => return false,
        }
        self.pacer().renew(fresh.pacer().limits());
        true
    }
}
