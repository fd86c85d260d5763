//! `GUBER_TLS_AUTO`: a self-signed certificate made at start, so a node serves TLS without any files
//! (tests and quick starts). Other nodes cannot verify it: a cluster of such nodes needs
//! `GUBER_TLS_INSECURE_SKIP_VERIFY`, and clients need `--tls-insecure-skip-verify`.

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::TlsError;

/// A certificate and its private key, made in memory.
pub struct GeneratedIdentity {
    /// The certificate (self-signed: the chain is just this one).
    pub certificate: CertificateDer<'static>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
}

/// A self-signed ECDSA P-256 certificate for `localhost`, `127.0.0.1`, `::1` and `extra_names`
/// (hosts or IP addresses, e.g. the advertise address's host), usable both to serve and as a client
/// certificate for peer calls.
pub fn self_signed(extra_names: &[String]) -> Result<GeneratedIdentity, TlsError> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for name in extra_names {
        let name = name.trim_matches(|c| c == '[' || c == ']').to_string();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    let key = KeyPair::generate().map_err(TlsError::Generate)?;
    let mut params = CertificateParams::new(names).map_err(TlsError::Generate)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ringlimit (GUBER_TLS_AUTO)");
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let certificate = params.self_signed(&key).map_err(TlsError::Generate)?;
    Ok(GeneratedIdentity {
        certificate: certificate.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    })
}
