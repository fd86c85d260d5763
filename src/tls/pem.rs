//! Reading PEM files for TLS, with errors that name the setting and the file, so a bad path or a
//! wrong file is one clear line at start (or in the log of a failed reload).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// Every certificate in the PEM file at `path` (a leaf and its chain, or a set of CAs), which must
/// hold at least one.
pub fn read_certificates(
    variable: &'static str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read(variable, path)?;
    let certificates = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::File {
            variable,
            path: path.to_string(),
            reason: format!("not a PEM certificate file: {error}"),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::File {
            variable,
            path: path.to_string(),
            reason: "no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".into(),
        });
    }
    Ok(certificates)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in the PEM file at `path`.
pub fn read_private_key(
    variable: &'static str,
    path: &str,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read(variable, path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|error| TlsError::File {
        variable,
        path: path.to_string(),
        reason: match error {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PEM private key (-----BEGIN PRIVATE KEY-----) in the file".into()
            }
            other => format!("not a PEM private key file: {other}"),
        },
    })
}

/// The certificate chain in the PEM file at `cert` and the private key in the one at `key`, each
/// error naming its own variable.
pub fn read_identity(
    (cert_variable, cert): (&'static str, &str),
    (key_variable, key): (&'static str, &str),
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    Ok((
        read_certificates(cert_variable, cert)?,
        read_private_key(key_variable, key)?,
    ))
}

/// A root store of every certificate in the PEM file at `path`.
pub fn read_root_store(
    variable: &'static str,
    path: &str,
) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in read_certificates(variable, path)? {
        roots.add(certificate).map_err(|error| TlsError::File {
            variable,
            path: path.to_string(),
            reason: format!("not a usable CA certificate: {error}"),
        })?;
    }
    Ok(roots)
}

fn read(variable: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        variable,
        path: path.to_string(),
        source,
    })
}
