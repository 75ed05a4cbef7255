//! `telegraft certs`: a cluster CA and the certificates its members and clients present.
//!
//! One directory holds everything a cluster's TLS needs, in PEM:
//!
//! | file | what |
//! |---|---|
//! | `ca.pem`, `ca.key` | the cluster CA (its key signs the rest; keep it off the nodes) |
//! | `node-N.pem`, `node-N.key` | node N: a server and a client (peer) certificate |
//! | `client.pem`, `client.key` | a chat client (the load generator, `telegraft chat`) |
//! | `admin.pem`, `admin.key` | the operator: fault injection, on top of the client's rights |
//! | `auth.key` | the HMAC key that signs chat tokens (`token.rs`), when auth is on |
//!
//! Every certificate names its role and its cluster in a URI subject alternative name,
//! `urn:telegraft:<cluster>:node:<id>`, which the replicas read back ([`super::tls`]): the TLS
//! handshake proves the caller holds a certificate of this CA, the URI says what it may do.
//! Node certificates also name `localhost`, `127.0.0.1` and every `--hosts` entry (names
//! and addresses the node is reached at), which clients verify as usual.
//!
//! Run again on a directory that already has `ca.pem` and `ca.key`, it keeps that CA and
//! issues the other certificates again: a host added, more nodes, or a second cluster id
//! under the same CA (whose nodes are still refused by the first cluster: the cluster id in
//! the URI differs). `auth.key` is kept if present. Keys are written mode 0600.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::tls::Role;
use super::{SecurityError, check_cluster_id, token};

/// What `telegraft certs` is asked for.
#[derive(Clone, Debug)]
pub struct CertsRequest {
    pub out: PathBuf,
    pub nodes: u64,
    pub cluster_id: String,
    /// More names and addresses for the node certificates (beside localhost, 127.0.0.1).
    pub hosts: Vec<String>,
    pub valid_days: u32,
}

/// What was written.
#[derive(Debug)]
pub struct Issued {
    pub files: Vec<PathBuf>,
    /// The CA already existed and was kept.
    pub reused_ca: bool,
    /// `auth.key` already existed and was kept.
    pub reused_auth_key: bool,
}

/// The URI a certificate of `role` in `cluster` carries.
pub fn identity_uri(cluster: &str, role: Role) -> String {
    match role {
        Role::Node(id) => format!("urn:telegraft:{cluster}:node:{id}"),
        Role::Client => format!("urn:telegraft:{cluster}:client"),
        Role::Admin => format!("urn:telegraft:{cluster}:admin"),
    }
}

/// The file names a role's certificate and key have in a certificate directory.
pub fn file_names(role: Role) -> (String, String) {
    let stem = match role {
        Role::Node(id) => format!("node-{id}"),
        Role::Client => "client".to_string(),
        Role::Admin => "admin".to_string(),
    };
    (format!("{stem}.pem"), format!("{stem}.key"))
}

/// Creates (or completes) a certificate directory.
pub fn issue(req: &CertsRequest) -> Result<Issued, SecurityError> {
    check_cluster_id(&req.cluster_id)?;
    if req.nodes == 0 {
        return Err(SecurityError::Invalid("--nodes must be at least 1".into()));
    }
    if req.valid_days == 0 {
        return Err(SecurityError::Invalid(
            "--valid-days must be at least 1".into(),
        ));
    }
    std::fs::create_dir_all(&req.out).map_err(|e| SecurityError::io(&req.out, e))?;
    let mut files = Vec::new();
    let now = time::OffsetDateTime::now_utc();
    // A day of slack for clocks behind this one.
    let not_before = now - time::Duration::days(1);
    let not_after = now + time::Duration::days(i64::from(req.valid_days));

    let (ca_pem, ca_key) = (req.out.join("ca.pem"), req.out.join("ca.key"));
    let reused_ca = ca_pem.exists() && ca_key.exists();
    let issuer = if reused_ca {
        let key = KeyPair::from_pem(&read(&ca_key)?)?;
        Issuer::from_ca_cert_pem(&read(&ca_pem)?, key)?
    } else {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(
            DnType::CommonName,
            format!("Telegraft CA ({})", req.cluster_id),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Telegraft");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = not_before;
        params.not_after = now + time::Duration::days(i64::from(req.valid_days) * 2);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        write(&ca_pem, cert.pem().as_bytes(), false, &mut files)?;
        write(&ca_key, key.serialize_pem().as_bytes(), true, &mut files)?;
        Issuer::new(params, key)
    };

    let mut roles: Vec<Role> = (1..=req.nodes).map(Role::Node).collect();
    roles.extend([Role::Client, Role::Admin]);
    for role in roles {
        let names = match role {
            Role::Node(_) => {
                let mut n = vec!["localhost".to_string(), "127.0.0.1".to_string()];
                n.extend(
                    req.hosts
                        .iter()
                        .filter(|h| !n.contains(h))
                        .cloned()
                        .collect::<Vec<_>>(),
                );
                n
            }
            Role::Client | Role::Admin => Vec::new(),
        };
        let mut params = CertificateParams::new(names)?;
        let (cn, _) = file_names(role);
        params
            .distinguished_name
            .push(DnType::CommonName, cn.trim_end_matches(".pem").to_string());
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Telegraft");
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, req.cluster_id.clone());
        let uri = identity_uri(&req.cluster_id, role);
        params.subject_alt_names.push(SanType::URI(
            uri.clone()
                .try_into()
                .map_err(|_| SecurityError::Invalid(format!("bad URI {uri}")))?,
        ));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match role {
            // A node serves, and calls its peers as a client.
            Role::Node(_) => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Client | Role::Admin => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.not_before = not_before;
        params.not_after = not_after;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let (pem, key_file) = file_names(role);
        write(&req.out.join(pem), cert.pem().as_bytes(), false, &mut files)?;
        write(
            &req.out.join(key_file),
            key.serialize_pem().as_bytes(),
            true,
            &mut files,
        )?;
    }

    let auth = req.out.join("auth.key");
    let reused_auth_key = auth.exists();
    if !reused_auth_key {
        write(&auth, token::new_key_file().as_bytes(), true, &mut files)?;
    }
    Ok(Issued {
        files,
        reused_ca,
        reused_auth_key,
    })
}

fn read(path: &Path) -> Result<String, SecurityError> {
    std::fs::read_to_string(path).map_err(|e| SecurityError::io(path, e))
}

/// Writes a file whole (through a temporary name, so a reader never sees half of it);
/// secrets are mode 0600 from the start.
fn write(
    path: &Path,
    bytes: &[u8],
    secret: bool,
    files: &mut Vec<PathBuf>,
) -> Result<(), SecurityError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let err = |e| SecurityError::io(path, e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    files.push(path.to_path_buf());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::tls::PeerIdentity;

    fn req(dir: &Path, cluster: &str) -> CertsRequest {
        CertsRequest {
            out: dir.to_path_buf(),
            nodes: 3,
            cluster_id: cluster.into(),
            hosts: vec!["telegraft-0".into(), "10.0.0.7".into()],
            valid_days: 30,
        }
    }

    fn der(path: &Path) -> Vec<u8> {
        let pem = std::fs::read(path).unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        p.contents
    }

    #[test]
    fn every_certificate_names_its_role_and_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let issued = issue(&req(dir.path(), "blue")).unwrap();
        assert!(!issued.reused_ca);
        for (file, role) in [
            ("node-1.pem", Role::Node(1)),
            ("node-3.pem", Role::Node(3)),
            ("client.pem", Role::Client),
            ("admin.pem", Role::Admin),
        ] {
            let id = PeerIdentity::from_der(&der(&dir.path().join(file))).unwrap();
            assert_eq!(id.cluster, "blue");
            assert_eq!(id.role, role);
        }
        // Node certificates name what clients dial.
        let node = der(&dir.path().join("node-2.pem"));
        let (_, cert) = x509_parser::parse_x509_certificate(&node).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names = format!("{:?}", san.value.general_names);
        for n in ["localhost", "telegraft-0", "127.0.0.1", "10.0.0.7"] {
            let n = if n.contains('.') && n.chars().next().unwrap().is_ascii_digit() {
                let ip: std::net::Ipv4Addr = n.parse().unwrap();
                format!("{:?}", ip.octets())
            } else {
                n.to_string()
            };
            assert!(names.contains(&n), "{n} not in {names}");
        }
        use std::os::unix::fs::PermissionsExt;
        for key in [
            "ca.key",
            "node-1.key",
            "client.key",
            "admin.key",
            "auth.key",
        ] {
            let mode = std::fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
    }

    #[test]
    fn a_second_run_keeps_the_ca_and_the_auth_key() {
        let dir = tempfile::tempdir().unwrap();
        issue(&req(dir.path(), "blue")).unwrap();
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let auth = std::fs::read(dir.path().join("auth.key")).unwrap();
        let again = issue(&req(dir.path(), "green")).unwrap();
        assert!(again.reused_ca && again.reused_auth_key);
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
        assert_eq!(std::fs::read(dir.path().join("auth.key")).unwrap(), auth);
        let id = PeerIdentity::from_der(&der(&dir.path().join("node-1.pem"))).unwrap();
        assert_eq!(id.cluster, "green");
    }

    #[test]
    fn bad_requests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = req(dir.path(), "Bad Id");
        assert!(issue(&r).is_err());
        r.cluster_id = "ok".into();
        r.nodes = 0;
        assert!(issue(&r).unwrap_err().to_string().contains("--nodes"));
    }
}
