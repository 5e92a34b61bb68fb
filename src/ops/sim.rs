//! `prmsync sim`: the built-in PartnerStack and HubSpot simulators as long-lived loopback servers,
//! seeded, plus a config (and secret files) that points the real daemon at them.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::demo::{HS_SECRET, HS_TOKEN, PS_KEY};
use crate::sim::hubspot::HubSpotSim;
use crate::sim::partnerstack::PartnerStackSim;
use crate::sim::{SimServer, seed};

/// The first line of every config `prmsync sim` writes; only such a file is ever replaced.
pub const HEADER: &str = "# Written by `prmsync sim`";

/// What to start and where to write the config.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub config: PathBuf,
    pub deals: usize,
    pub partners: usize,
    /// The webhook listener address written into the config.
    pub listen: SocketAddr,
    /// The admin listener address written into the config.
    pub admin_listen: SocketAddr,
}

/// Running simulators; they stop when this is dropped or [`Running::stop`] is called.
#[derive(Debug)]
pub struct Running {
    pub partnerstack: PartnerStackSim,
    pub hubspot: HubSpotSim,
    pub partnerstack_server: SimServer,
    pub hubspot_server: SimServer,
    pub config: PathBuf,
}

impl Running {
    /// What an admin needs to know, for the terminal.
    pub fn describe(&self) -> String {
        let config = self.config.display();
        format!(
            "simulators running on 127.0.0.1 (Ctrl-C stops them):\n  \
             PartnerStack (PRM)  {ps}\n  HubSpot (CRM)       {hs}\n\
             config written to {config}\n\
             try: prmsync check {config}\n     prmsync plan --config {config}\n     prmsync run --config {config}\n",
            ps = self.partnerstack_server.url("/api/v2"),
            hs = self.hubspot_server.url(""),
        )
    }

    /// Stops both servers, waiting for open requests.
    pub async fn stop(self) {
        self.partnerstack_server.stop().await;
        self.hubspot_server.stop().await;
    }
}

/// Starts and seeds the simulators, then writes the config, its secret files and removes the
/// state of a previous `prmsync sim` in the same folder (its links point into simulators that
/// are gone). Refuses to replace a config it did not write.
pub async fn start(opts: &SimOptions) -> anyhow::Result<Running> {
    let dir = match opts.config.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    if opts.config.exists() {
        let old = std::fs::read_to_string(&opts.config)
            .with_context(|| format!("reading {}", opts.config.display()))?;
        if !old.starts_with(HEADER) {
            bail!(
                "{} exists and was not written by `prmsync sim`; choose another --config",
                opts.config.display()
            );
        }
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;

    let partnerstack = PartnerStackSim::new(PS_KEY);
    let hubspot = HubSpotSim::new(HS_TOKEN);
    let partnerstack_server = SimServer::start(partnerstack.router()).await?;
    let hubspot_server = SimServer::start(hubspot.router()).await?;
    for deal in seed::deals(opts.deals, opts.partners) {
        partnerstack.upsert_deal(deal);
    }

    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).with_context(|| format!("creating {}", secrets.display()))?;
    for (name, value) in [
        ("partnerstack_api_key", PS_KEY),
        ("hubspot_access_token", HS_TOKEN),
        ("hubspot_client_secret", HS_SECRET),
    ] {
        write_private(&secrets.join(name), value)?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let old = dir.join(format!("state.db{suffix}"));
        if old.exists() {
            std::fs::remove_file(&old)
                .with_context(|| format!("removing old simulator state {}", old.display()))?;
        }
    }
    let text = config_text(
        &partnerstack_server.url("/api/v2"),
        &hubspot_server.url(""),
        &secrets,
        opts.listen,
        opts.admin_listen,
    );
    let tmp = dir.join(".prmsync-sim.toml.tmp");
    write_private(&tmp, &text)?;
    std::fs::rename(&tmp, &opts.config)
        .with_context(|| format!("writing {}", opts.config.display()))?;
    Ok(Running {
        partnerstack,
        hubspot,
        partnerstack_server,
        hubspot_server,
        config: opts.config.clone(),
    })
}

/// The config for simulators at these URLs (state next to the config, secrets in files).
pub fn config_text(
    partnerstack: &reqwest::Url,
    hubspot: &reqwest::Url,
    secrets: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
) -> String {
    let secret = |name: &str| {
        format!(
            "{{ file = {:?} }}",
            secrets.join(name).display().to_string()
        )
    };
    format!(
        "{HEADER} for its simulators; rewritten on each start.\n\
         [daemon]\n\
         state_path = \"state.db\"\n\
         poll_interval_secs = 5\n\
         \n\
         [http]\n\
         listen = \"{listen}\"\n\
         \n\
         [admin]\n\
         listen = \"{admin}\"\n\
         \n\
         [partnerstack]\n\
         base_url = \"{partnerstack}\"\n\
         api_key = {ps_key}\n\
         \n\
         [hubspot]\n\
         base_url = \"{hubspot}\"\n\
         access_token = {hs_token}\n\
         client_secret = {hs_secret}\n",
        ps_key = secret("partnerstack_api_key"),
        hs_token = secret("hubspot_access_token"),
        hs_secret = secret("hubspot_client_secret"),
    )
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Environment, load};

    #[tokio::test]
    async fn the_written_config_loads_and_points_at_the_simulators() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SimOptions {
            config: dir.path().join("sim/prmsync.toml"),
            deals: 3,
            partners: 2,
            listen: ([127, 0, 0, 1], 0).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
        };
        let running = start(&opts).await.unwrap();
        let config = load(&opts.config, &Environment::default()).expect("config loads");
        assert_eq!(
            config.daemon.state_path,
            dir.path().canonicalize().unwrap().join("sim/state.db")
        );
        assert!(running.describe().contains("prmsync run --config"));
        // A second start replaces its own config.
        running.stop().await;
        start(&opts).await.expect("restart").stop().await;
    }

    #[tokio::test]
    async fn a_foreign_config_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prmsync.toml");
        std::fs::write(&path, "[daemon]\n").unwrap();
        let opts = SimOptions {
            config: path.clone(),
            deals: 1,
            partners: 1,
            listen: ([127, 0, 0, 1], 0).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
        };
        let err = start(&opts).await.unwrap_err();
        assert!(err.to_string().contains("not written by"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[daemon]\n");
    }
}
