//! TLS for a replica and its clients (rustls through tonic), and who a caller's certificate
//! says it is.
//!
//! A replica serves TLS with its node certificate and asks every caller for a certificate of
//! the cluster CA. Presenting one is optional at the handshake, so a chat client that holds
//! only `ca.pem` can still connect (chat calls are guarded by tokens when `--require-auth`
//! is on); but the services that matter check the certificate themselves:
//! - Raft accepts only a node certificate of this cluster, and only messages from the node
//!   it names ([`PeerIdentity::require_node`]);
//! - Admin's fault injection accepts only the admin certificate of this cluster.
//!
//! A certificate of another CA fails the handshake; one of this CA but another cluster id
//! is refused by those checks. The replica's own calls to its peers (Raft, forwarded chat
//! calls) present its node certificate, so traffic between peers is mutually authenticated.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use super::SecurityError;
use super::certs::file_names;

/// Makes ring rustls's crypto provider for this process, once, before any TLS
/// configuration is used. Both ring and aws-lc-rs end up compiled into the workspace (the
/// load generator's HTTP client brings the second), and rustls then refuses to guess. ring
/// is the one every TLS path here was built and measured with.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An error means a provider was installed already (by the embedding program): keep it.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Node(u64),
    Client,
    Admin,
}

/// The cluster and role a certificate names in its `urn:telegraft:` URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub cluster: String,
    pub role: Role,
}

impl PeerIdentity {
    /// Reads the identity from a DER certificate (already verified by the handshake).
    pub fn from_der(der: &[u8]) -> Result<PeerIdentity, SecurityError> {
        let bad = |m: String| SecurityError::Invalid(format!("certificate: {m}"));
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| bad(e.to_string()))?
            .ok_or_else(|| bad("no subject alternative names".into()))?;
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name
                && let Some(id) = PeerIdentity::parse_uri(uri)
            {
                return Ok(id);
            }
        }
        Err(bad("no urn:telegraft: identity".into()))
    }

    /// `urn:telegraft:<cluster>:node:<id>`, `...:client`, `...:admin`.
    pub fn parse_uri(uri: &str) -> Option<PeerIdentity> {
        let rest = uri.strip_prefix("urn:telegraft:")?;
        let mut parts = rest.split(':');
        let cluster = parts.next()?.to_string();
        let role = match (parts.next()?, parts.next()) {
            ("node", Some(id)) => Role::Node(id.parse().ok().filter(|id| *id > 0)?),
            ("client", None) => Role::Client,
            ("admin", None) => Role::Admin,
            _ => return None,
        };
        if parts.next().is_some() || super::check_cluster_id(&cluster).is_err() {
            return None;
        }
        Some(PeerIdentity { cluster, role })
    }

    /// The identity of a request's caller: `None` without a client certificate.
    pub fn of_request<T>(req: &tonic::Request<T>) -> Option<Result<PeerIdentity, SecurityError>> {
        let certs = req.peer_certs()?;
        let leaf = certs.first()?;
        Some(PeerIdentity::from_der(leaf.as_ref()))
    }

    /// The node id of a caller that must be a node of `cluster`, or why it is refused.
    pub fn require_node<T>(req: &tonic::Request<T>, cluster: &str) -> Result<u64, String> {
        match PeerIdentity::of_request(req) {
            None => Err("the Raft service needs a node certificate; none was presented".into()),
            Some(Err(e)) => Err(e.to_string()),
            Some(Ok(id)) if id.cluster != cluster => Err(format!(
                "a certificate of cluster '{}' is not a member of cluster '{cluster}'",
                id.cluster
            )),
            Some(Ok(PeerIdentity {
                role: Role::Node(n),
                ..
            })) => Ok(n),
            Some(Ok(id)) => Err(format!(
                "the Raft service accepts node certificates only, not a {:?} certificate",
                id.role
            )),
        }
    }

    /// Whether a caller holds the admin certificate of `cluster`, or why not.
    pub fn require_admin<T>(req: &tonic::Request<T>, cluster: &str) -> Result<(), String> {
        match PeerIdentity::of_request(req) {
            Some(Ok(PeerIdentity {
                cluster: c,
                role: Role::Admin,
            })) if c == cluster => Ok(()),
            Some(Ok(id)) => Err(format!(
                "fault injection needs the admin certificate of cluster '{cluster}', not a \
                 {:?} certificate of cluster '{}'",
                id.role, id.cluster
            )),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("fault injection needs the admin certificate; none was presented".into()),
        }
    }
}

/// A replica's TLS: its server side, the client side its peer calls use, and the cluster id
/// its certificate names.
#[derive(Clone, Debug)]
pub struct NodeTls {
    pub cluster_id: String,
    pub server: ServerTlsConfig,
    pub client: ClientTlsConfig,
}

impl NodeTls {
    /// Loads `ca.pem`, `node-<id>.pem` and `node-<id>.key` from `dir`, and checks that the
    /// certificate is node `id`'s.
    pub fn load(dir: &Path, id: u64) -> Result<NodeTls, SecurityError> {
        install_crypto_provider();
        let ca = read(&dir.join("ca.pem"))?;
        let (cert_file, key_file) = file_names(Role::Node(id));
        let cert = read(&dir.join(&cert_file))?;
        let key = read(&dir.join(&key_file))?;
        let identity = pem_identity(&dir.join(&cert_file), &cert)?;
        if identity.role != Role::Node(id) {
            return Err(SecurityError::Invalid(format!(
                "{}: names {:?}, not node {id}",
                dir.join(cert_file).display(),
                identity.role
            )));
        }
        let ident = Identity::from_pem(&cert, &key);
        Ok(NodeTls {
            cluster_id: identity.cluster,
            server: ServerTlsConfig::new()
                .identity(ident.clone())
                .client_ca_root(Certificate::from_pem(&ca))
                .client_auth_optional(true),
            client: ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca))
                .identity(ident),
        })
    }
}

/// A client's TLS from a certificate directory: trusts `ca.pem`, and presents `role`'s
/// certificate when the directory holds it (a chat client may hold only the CA).
pub fn client_config(dir: &Path, role: Role) -> Result<ClientTlsConfig, SecurityError> {
    install_crypto_provider();
    let ca = read(&dir.join("ca.pem"))?;
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca));
    let (cert_file, key_file) = file_names(role);
    let (cert, key) = (dir.join(cert_file), dir.join(key_file));
    if cert.exists() && key.exists() {
        config = config.identity(Identity::from_pem(read(&cert)?, read(&key)?));
    }
    Ok(config)
}

/// The client side a tool given `--tls-dir DIR` uses: trust `ca.pem`, and present the
/// admin certificate when the directory holds one (an operator's), else the client's.
pub fn operator_config(dir: &Path) -> Result<ClientTlsConfig, SecurityError> {
    let role = if dir.join(file_names(Role::Admin).0).exists() {
        Role::Admin
    } else {
        Role::Client
    };
    client_config(dir, role)
}

/// The URL scheme for `tls`.
pub fn scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

fn pem_identity(path: &Path, pem: &[u8]) -> Result<PeerIdentity, SecurityError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|e| SecurityError::Invalid(format!("{}: {e}", path.display())))?;
    PeerIdentity::from_der(&p.contents)
        .map_err(|e| SecurityError::Invalid(format!("{}: {e}", path.display())))
}

fn read(path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|e| SecurityError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_uris_parse_strictly() {
        let p = PeerIdentity::parse_uri;
        assert_eq!(
            p("urn:telegraft:blue:node:3"),
            Some(PeerIdentity {
                cluster: "blue".into(),
                role: Role::Node(3)
            })
        );
        assert_eq!(p("urn:telegraft:blue:admin").unwrap().role, Role::Admin);
        assert_eq!(p("urn:telegraft:blue:client").unwrap().role, Role::Client);
        for bad in [
            "urn:telegraft:blue:node:0",
            "urn:telegraft:blue:node:x",
            "urn:telegraft:blue:node",
            "urn:telegraft:blue:admin:1",
            "urn:telegraft:Blue:client",
            "urn:other:blue:client",
            "urn:telegraft:blue:client:extra",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_node_loads_its_own_certificate_only() {
        let dir = tempfile::tempdir().unwrap();
        super::super::certs::issue(&super::super::certs::CertsRequest {
            out: dir.path().into(),
            nodes: 2,
            cluster_id: "blue".into(),
            hosts: vec![],
            valid_days: 1,
        })
        .unwrap();
        assert_eq!(NodeTls::load(dir.path(), 2).unwrap().cluster_id, "blue");
        // Node 1's files renamed as node 2's: the certificate names node 1.
        std::fs::copy(dir.path().join("node-1.pem"), dir.path().join("node-2.pem")).unwrap();
        std::fs::copy(dir.path().join("node-1.key"), dir.path().join("node-2.key")).unwrap();
        let e = NodeTls::load(dir.path(), 2).unwrap_err().to_string();
        assert!(e.contains("not node 2"), "{e}");
        let e = NodeTls::load(dir.path(), 5).unwrap_err().to_string();
        assert!(e.contains("node-5.pem"), "{e}");
    }
}
