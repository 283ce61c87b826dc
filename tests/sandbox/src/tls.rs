//! Certificates for a TLS cluster, made the way `tiup dm deploy` makes them when meta.yaml sets
//! `global.enable_tls` (pkg/crypto, pkg/cluster/task/tls.go, pkg/cluster/manager/cacert.go):
//!
//! - a cluster CA, kept in the store as `tls/ca.crt` and `tls/ca.pem`;
//! - a client certificate for the operator's tools, `tls/client.crt` with its RSA key
//!   `tls/client.pem` (PKCS#1 PEM, `RSA PRIVATE KEY`, as TiUP writes it);
//! - per instance, `<deploy_dir>/tls/{ca.crt,<role>.crt,<role>.pem}`: a certificate for
//!   `localhost`, `127.0.0.1` and the instance's host, good for serving and as a client (the
//!   masters and workers call each other with it).
//!
//! TiUP makes every key RSA; here only the client key is (what dm-patch reads must be what TiUP
//! writes), the CA and instance keys are ECDSA P-256, which is quicker to make.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256,
};

/// The store's (and the sandbox's own) TLS directory name.
pub const TLS_DIR: &str = "tls";
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.pem";
pub const CLIENT_CERT: &str = "client.crt";
pub const CLIENT_KEY: &str = "client.pem";

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A cluster's certificate authority.
pub struct ClusterCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl ClusterCa {
    /// A fresh CA (TiUP's subject: O=PingCAP, OU=TiUP).
    pub fn new() -> Result<ClusterCa> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.remove(DnType::CommonName);
        params.distinguished_name.push(DnType::OrganizationName, "PingCAP");
        params.distinguished_name.push(DnType::OrganizationalUnitName, "TiUP");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(ClusterCa { cert_pem: cert.pem(), key_pem, issuer: Issuer::new(params, key) })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// An instance's certificate: SANs `localhost`, `127.0.0.1` and `host`; usable to serve
    /// and as a client certificate.
    pub fn instance_identity(&self, role: &str, host: &str) -> Result<Identity> {
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        if !names.iter().any(|name| name == host) {
            names.push(host.to_owned());
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, role);
        params.distinguished_name.push(DnType::OrganizationName, "PingCAP");
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Identity { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// The operator's client certificate, `CN=<cluster>-client`, no SANs, with an RSA key in
    /// PKCS#1 PEM.
    pub fn client_identity(&self, cluster_name: &str) -> Result<Identity> {
        let key = KeyPair::generate_for(&PKCS_RSA_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, format!("{cluster_name}-client"));
        params.distinguished_name.push(DnType::OrganizationName, "PingCAP");
        params.distinguished_name.push(DnType::OrganizationalUnitName, "tiup-cluster-client");
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        let pkcs1 = pkcs1_of_pkcs8_rsa(key.serialized_der())
            .context("the generated RSA key is not PKCS#8 as expected")?;
        let key_pem = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", pkcs1.to_vec()));
        Ok(Identity { cert_pem: cert.pem(), key_pem })
    }

    /// Writes the store's `tls/` files into `dir`: `ca.crt`, `ca.pem`, `client.crt`,
    /// `client.pem` (keys mode 0600).
    pub fn write_store_files(&self, dir: &Path, client: &Identity) -> Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write(&dir.join(CA_CERT), &self.cert_pem, 0o644)?;
        write(&dir.join(CA_KEY), &self.key_pem, 0o600)?;
        write(&dir.join(CLIENT_CERT), &client.cert_pem, 0o644)?;
        write(&dir.join(CLIENT_KEY), &client.key_pem, 0o600)
    }

    /// Writes an instance's `tls/` files into `dir`: `ca.crt`, `<role>.crt`, `<role>.pem`.
    pub fn write_instance_files(&self, dir: &Path, role: &str, identity: &Identity) -> Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write(&dir.join(CA_CERT), &self.cert_pem, 0o644)?;
        write(&dir.join(format!("{role}.crt")), &identity.cert_pem, 0o644)?;
        write(&dir.join(format!("{role}.pem")), &identity.key_pem, 0o600)
    }
}

/// Replaces `client.crt` and `client.pem` in `dir` with a client identity signed by a CA of
/// its own, which no instance of the cluster trusts.
pub fn write_foreign_client(dir: &Path, cluster_name: &str) -> Result<()> {
    let stranger = ClusterCa::new()?.client_identity(cluster_name)?;
    write(&dir.join(CLIENT_CERT), &stranger.cert_pem, 0o644)?;
    write(&dir.join(CLIENT_KEY), &stranger.key_pem, 0o600)
}

/// A client of the instances' HTTPS API as TiUP's tools are: trusting only the cluster's CA in
/// `dir`, presenting `client.crt` with `client.pem`.
pub fn https_client(
    builder: reqwest::blocking::ClientBuilder,
    dir: &Path,
) -> Result<reqwest::blocking::ClientBuilder> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read(&path).with_context(|| format!("reading {}", path.display()))
    };
    let ca = reqwest::Certificate::from_pem(&read(CA_CERT)?)?;
    let mut identity = read(CLIENT_CERT)?;
    identity.extend(read(CLIENT_KEY)?);
    let identity = reqwest::Identity::from_pem(&identity)?;
    Ok(builder.tls_certs_only([ca]).identity(identity))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (RFC 5208): the OCTET STRING
/// after the version and the algorithm identifier.
fn pkcs1_of_pkcs8_rsa(pkcs8: &[u8]) -> Result<&[u8]> {
    let (tag, info, _) = tlv(pkcs8)?;
    let (version_tag, _, rest) = tlv(info)?;
    let (algorithm_tag, _, rest) = tlv(rest)?;
    let (key_tag, key, _) = tlv(rest)?;
    if (tag, version_tag, algorithm_tag, key_tag) != (0x30, 0x02, 0x30, 0x04) {
        bail!("unexpected DER structure");
    }
    Ok(key)
}

/// One DER tag-length-value: `(tag, value, what follows)`.
fn tlv(der: &[u8]) -> Result<(u8, &[u8], &[u8])> {
    let [tag, first, rest @ ..] = der else { bail!("truncated DER") };
    let (len, rest) = if *first < 0x80 {
        (usize::from(*first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            bail!("unsupported DER length");
        }
        let len = rest[..count].iter().fold(0usize, |len, byte| len << 8 | usize::from(*byte));
        (len, &rest[count..])
    };
    if rest.len() < len {
        bail!("truncated DER");
    }
    Ok((*tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_key_is_pkcs1_and_instance_certificates_name_their_host() {
        let ca = ClusterCa::new().unwrap();
        let client = ca.client_identity("c").unwrap();
        assert!(
            client.key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
            "{}",
            client.key_pem
        );
        assert!(client.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        // The PKCS#1 key still loads (and is the certificate's).
        let key = KeyPair::from_pem(&client.key_pem).unwrap();
        assert_eq!(key.algorithm(), &PKCS_RSA_SHA256);

        let server = ca.instance_identity("dm-master", "127.100.0.1").unwrap();
        assert!(server.key_pem.contains("PRIVATE KEY"));
        let der = pem::parse(&server.cert_pem).unwrap();
        // 127.100.0.1 as an IP SAN: the four bytes appear in the certificate.
        assert!(der.contents().windows(4).any(|w| w == [127, 100, 0, 1]));
    }
}
