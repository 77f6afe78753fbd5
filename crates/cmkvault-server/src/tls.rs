//! TLS material: a private CA and a server certificate made on first start, or the operator's own.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::datadir::write_file_atomic;
use crate::ServerError;

/// Makes `DIR/tls/{ca.pem, server.pem, server.key}` if they are missing or were made for
/// another vault domain. The CA's private key is used once and discarded: to change SANs, the
/// CA and certificate are made again and clients must trust the new `ca.pem`.
pub fn ensure_certificates(tls_dir: &Path, vault_domain: &str) -> Result<(), ServerError> {
    let domain_file = tls_dir.join("domain");
    let ca = tls_dir.join("ca.pem");
    let cert = tls_dir.join("server.pem");
    let key = tls_dir.join("server.key");
    // The directory holds the server's private key: 0700, tightened if made wider.
    crate::datadir::private_dir(tls_dir)?;
    restrict_key_file(&key)?;
    let current = std::fs::read_to_string(&domain_file).ok();
    if current.as_deref().map(str::trim) == Some(vault_domain)
        && ca.exists()
        && cert.exists()
        && key.exists()
    {
        return Ok(());
    }
    if current.is_some() {
        tracing::warn!(vault_domain, "vault domain changed: making a new CA and server certificate; clients must trust the new ca.pem");
    }
    let tls_err = |e: rcgen::Error| ServerError::Tls(e.to_string());

    let ca_key = KeyPair::generate().map_err(tls_err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "cmkvault local CA");
    dn.push(DnType::OrganizationName, "cmkvault");
    ca_params.distinguished_name = dn;
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    ca_params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().map_err(tls_err)?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
        vault_domain.to_string(),
        format!("*.{vault_domain}"),
    ])
    .map_err(tls_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "cmkvault");
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2035, 12, 31);
    let server_cert = params.signed_by(&server_key, &issuer).map_err(tls_err)?;

    write_file_atomic(&key, server_key.serialize_pem().as_bytes(), 0o600)?;
    write_file_atomic(
        &cert,
        format!("{}{}", server_cert.pem(), ca_cert.pem()).as_bytes(),
        0o644,
    )?;
    write_file_atomic(&ca, ca_cert.pem().as_bytes(), 0o644)?;
    write_file_atomic(&domain_file, vault_domain.as_bytes(), 0o644)?;
    Ok(())
}

/// Sets mode 0600 on a generated private key file that exists with a wider mode (made by an
/// earlier version or copied in by hand).
fn restrict_key_file(key: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(key) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| ServerError::io(key, e))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ServerError::io(key, e)),
    }
}

/// Loads a certificate chain and key into a rustls server config (aws-lc-rs provider,
/// HTTP/1.1 and HTTP/2).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let cert_pem = std::fs::read(cert).map_err(|e| ServerError::io(cert, e))?;
    let key_pem = std::fs::read(key).map_err(|e| ServerError::io(key, e))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!(
            "{}: no certificate found",
            cert.display()
        )));
    }
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| ServerError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| ServerError::Tls(format!("{}: no private key found", key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| ServerError::Tls(format!("certificate and key do not match: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
