//! What a failed TLS handshake with a DM instance means to the operator, and which of the
//! store's files it concerns: the client certificate the instance refused, or the CA its own
//! certificate does not chain to.

use std::error::Error;
use std::io;
use std::path::PathBuf;

use rustls::AlertDescription;

use crate::topology::tls::ClientTls;

/// Why a TLS handshake with an instance failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsProblem {
    /// The instance ended the handshake with an alert about our certificate: it is not signed
    /// by the CA the instance trusts (or expired, or not acceptable to it).
    #[error(
        "the instance refused the client certificate {} (TLS alert: {alert}); it must be signed by the CA the cluster's instances trust",
        cert.display()
    )]
    ClientCertificateRefused { cert: PathBuf, alert: String },
    /// The instance's certificate does not verify with the cluster's CA (another CA, expired,
    /// not issued for the host it is reached at).
    #[error("the instance's certificate is not valid with the cluster's CA {}: {reason}", ca.display())]
    ServerCertificateRejected { ca: PathBuf, reason: String },
    /// Anything else that broke the handshake (e.g. the instance does not speak TLS).
    #[error(
        "the handshake failed ({reason}) with the CA {} and the client certificate {}",
        ca.display(),
        cert.display()
    )]
    Handshake { ca: PathBuf, cert: PathBuf, reason: String },
}

/// The TLS problem behind a failed call, when there is one: rustls' error, found anywhere in
/// the chain of causes (it comes wrapped in I/O errors, possibly nested, whose `source` skips
/// the error they wrap).
pub fn problem(err: &(dyn Error + 'static), files: &ClientTls) -> Option<TlsProblem> {
    let found = rustls_error(err)?;
    Some(match found {
        rustls::Error::AlertReceived(alert) if refuses_certificate(*alert) => {
            TlsProblem::ClientCertificateRefused {
                cert: files.cert.clone(),
                alert: format!("{alert:?}"),
            }
        }
        rustls::Error::InvalidCertificate(reason) => TlsProblem::ServerCertificateRejected {
            ca: files.ca.clone(),
            reason: reason.to_string(),
        },
        other => TlsProblem::Handshake {
            ca: files.ca.clone(),
            cert: files.cert.clone(),
            reason: other.to_string(),
        },
    })
}

/// Alerts a server sends when it does not accept the client's certificate.
fn refuses_certificate(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired
            | AlertDescription::DecryptError
    )
}

fn rustls_error<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(cause) = next {
        if let Some(found) = cause.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        // An I/O error's `source` is its inner error's source: step into the inner error.
        let wrapped = cause.downcast_ref::<io::Error>().and_then(io::Error::get_ref);
        next = match wrapped {
            Some(inner) => Some(inner as &(dyn Error + 'static)),
            None => cause.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] io::Error);

    #[test]
    fn finds_rustls_inside_io_errors() {
        let alert = rustls::Error::AlertReceived(AlertDescription::UnknownCA);
        let err = Outer(io::Error::new(io::ErrorKind::InvalidData, alert.clone()));
        assert_eq!(rustls_error(&err), Some(&alert));
        let bad = rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature);
        let inner = io::Error::new(io::ErrorKind::InvalidData, bad.clone());
        let nested = Outer(io::Error::other(inner));
        assert_eq!(rustls_error(&nested), Some(&bad), "an I/O error in an I/O error");
        let plain = Outer(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(rustls_error(&plain), None);
    }
}
