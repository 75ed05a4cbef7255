//! A run's security (`security: {tls, auth}`): the certificates and token key of the cluster
//! it starts, the flags the replicas get, how this process reaches them, and the sessions
//! its calls carry.
//!
//! The certificates are made with the cluster crate's `telegraft certs` code into the run's
//! folder (`certs/`, beside the data): a fresh CA per run, so no two runs trust each other,
//! and nothing to set up by hand. The generator presents the admin certificate (fault
//! injection needs it; chat calls accept any certificate of the CA) and trusts the CA.

use std::path::{Path, PathBuf};

use anyhow::Context;
use telegraft::security::certs::{CertsRequest, issue};
use telegraft::security::tls::{Role, client_config};

use crate::load::sessions;
use crate::scenario::Security;

/// What a run's security asks of the replicas and of this process.
#[derive(Debug, Default)]
pub struct RunSecurity {
    /// More `telegraft node` flags: `--tls-dir`, `--require-auth`, `--auth-key`.
    pub node_args: Vec<String>,
    /// The certificate directory, when TLS is on.
    pub certs: Option<PathBuf>,
}

impl RunSecurity {
    /// Makes the certificates (for `replicas` nodes, naming `hosts` too) under `run_dir`
    /// and installs the run's sessions when authentication is on; nothing for the bare
    /// cluster.
    pub fn prepare(
        security: Security,
        run_dir: &Path,
        replicas: u32,
        hosts: &[String],
    ) -> anyhow::Result<RunSecurity> {
        sessions::start(security.auth);
        if security.is_default() {
            return Ok(RunSecurity::default());
        }
        let dir = run_dir.join("certs");
        issue(&CertsRequest {
            out: dir.clone(),
            nodes: u64::from(replicas),
            cluster_id: telegraft::security::DEFAULT_CLUSTER_ID.into(),
            hosts: hosts.to_vec(),
            valid_days: 2,
        })
        .with_context(|| format!("making the run's certificates in {}", dir.display()))?;
        let mut node_args = Vec::new();
        if security.tls {
            node_args.extend(["--tls-dir".to_string(), dir.display().to_string()]);
        }
        if security.auth {
            node_args.extend([
                "--require-auth".to_string(),
                "--auth-key".to_string(),
                dir.join("auth.key").display().to_string(),
            ]);
        }
        Ok(RunSecurity {
            node_args,
            certs: security.tls.then_some(dir),
        })
    }

    /// For containers, which always serve TLS with the launcher's certificates
    /// (`docker.rs`): the run's sessions, and the flags authentication adds (the token key
    /// is `auth.key` in the containers' `/certs`).
    pub fn for_containers(security: Security) -> Vec<String> {
        sessions::start(security.auth);
        if security.auth {
            vec!["--require-auth".to_string()]
        } else {
            Vec::new()
        }
    }

    /// From now on, reach `endpoints` over TLS (when on), as the admin.
    pub fn reach(&self, endpoints: &[String]) -> anyhow::Result<()> {
        if let Some(dir) = &self.certs {
            let tls = client_config(dir, Role::Admin).context("the run's client certificate")?;
            telegraft::admin::use_tls_for(endpoints, &tls);
        }
        Ok(())
    }
}

/// The run is over: its calls carry no more tokens.
pub fn end_sessions() {
    sessions::install(None);
}
