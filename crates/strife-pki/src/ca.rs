//! The certificate authority: generating or loading it, and issuing leaf certificates whose
//! OU says the role and whose CN says the name (see `strife_common::net::connection`).

use std::time::Duration;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SerialNumber,
};
use strife_common::layout::KeyPairPaths;
use strife_common::net::connection::PeerRole;
use strife_common::net::tls::identity_dns_name;
use time::OffsetDateTime;

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// Certificates start slightly in the past so a peer with a lagging clock accepts them.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(3600);

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// One year from (an hour before) now.
    pub fn default_leaf() -> Self {
        Self::from_now(LEAF_VALIDITY)
    }

    /// From an hour before now until `lifetime` from now.
    pub fn from_now(lifetime: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - CLOCK_SKEW_ALLOWANCE,
            not_after: now + lifetime,
        }
    }
}

/// A leaf certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub certificate_pem: String,
    pub key_pem: String,
}

/// The project's CA: its certificate and signing key.
pub struct CertificateAuthority {
    certificate_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    /// A fresh CA for the payment network, valid ten years.
    pub fn generate() -> anyhow::Result<Self> {
        Self::generate_named("Strife CA")
    }

    /// A fresh CA called `common_name` (the etcd CA is one of its own), valid ten years.
    pub fn generate_named(common_name: &str) -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        name.push(DnType::OrganizationName, "Strife");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let validity = Validity::from_now(CA_VALIDITY);
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let certificate = params.self_signed(&key)?;
        Ok(CertificateAuthority {
            certificate_pem: certificate.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA that an earlier setup wrote.
    pub fn load(paths: &KeyPairPaths) -> anyhow::Result<Self> {
        let certificate_pem = std::fs::read_to_string(&paths.cert)
            .with_context(|| format!("reading {}", paths.cert.display()))?;
        let key_pem = std::fs::read_to_string(&paths.key)
            .with_context(|| format!("reading {}", paths.key.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("{} is not a private key", paths.key.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&certificate_pem, key)
            .with_context(|| format!("{} is not a CA certificate", paths.cert.display()))?;
        Ok(CertificateAuthority {
            certificate_pem,
            issuer,
        })
    }

    pub fn certificate_pem(&self) -> String {
        self.certificate_pem.clone()
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a certificate for `name` in `role` with the role's profile, served (for the
    /// gateway and banks) on loopback: see [`CertificateAuthority::issue_for_hosts`].
    pub fn issue(
        &self,
        role: PeerRole,
        name: &str,
        validity: Validity,
    ) -> anyhow::Result<IssuedCertificate> {
        self.issue_for_hosts(role, name, &default_hosts(), validity)
    }

    /// Issues a certificate for `name` in `role`. Profiles:
    /// - user (and admin): `clientAuth` only, no SAN, so it can never serve TLS;
    /// - gateway, bank: `serverAuth` + `clientAuth`, SANs = the identity name that pins it
    ///   (`strife_common::net::tls::identity_dns_name`) plus `hosts` it is served on.
    pub fn issue_for_hosts(
        &self,
        role: PeerRole,
        name: &str,
        hosts: &[String],
        validity: Validity,
    ) -> anyhow::Result<IssuedCertificate> {
        let (subject_alt_names, extended_key_usages) = match role {
            PeerRole::User => (Vec::new(), vec![ExtendedKeyUsagePurpose::ClientAuth]),
            PeerRole::Gateway | PeerRole::Bank => {
                let mut names = vec![identity_dns_name(role, name)];
                names.extend(hosts.iter().cloned());
                (
                    names,
                    vec![
                        ExtendedKeyUsagePurpose::ServerAuth,
                        ExtendedKeyUsagePurpose::ClientAuth,
                    ],
                )
            }
        };
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, name);
        subject.push(DnType::OrganizationalUnitName, role.organizational_unit());
        subject.push(DnType::OrganizationName, "Strife");
        self.sign_leaf(subject, subject_alt_names, extended_key_usages, validity)
    }

    /// Signs a fresh key pair's leaf certificate (never a CA) with the given subject, SANs
    /// and extended key usages: the one place leaf parameters are set.
    fn sign_leaf(
        &self,
        subject: DistinguishedName,
        subject_alt_names: Vec<String>,
        extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
        validity: Validity,
    ) -> anyhow::Result<IssuedCertificate> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(subject_alt_names)?;
        params.distinguished_name = subject;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = extended_key_usages;
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCertificate {
            certificate_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl CertificateAuthority {
    /// Issues the web console's certificate: `serverAuth` only (it never authenticates to a
    /// peer), SANs = `hosts`, CN `strife-console`. No role OU, so no Strife process would
    /// take it as a gateway, bank or user identity.
    pub fn issue_web(
        &self,
        hosts: &[String],
        validity: Validity,
    ) -> anyhow::Result<IssuedCertificate> {
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, WEB_CN);
        subject.push(DnType::OrganizationName, "Strife");
        self.sign_leaf(
            subject,
            hosts.to_vec(),
            vec![ExtendedKeyUsagePurpose::ServerAuth],
            validity,
        )
    }
}

/// The web console certificate's CN.
pub const WEB_CN: &str = "strife-console";

impl CertificateAuthority {
    /// Issues an etcd certificate with CN `common_name` (the etcd user, for a client). With
    /// `server_hosts`, it is etcd's server certificate for those hosts (`serverAuth`, also
    /// `clientAuth` for etcd's own peer links); without, a client certificate only.
    pub fn issue_etcd(
        &self,
        common_name: &str,
        server_hosts: Option<&[String]>,
        validity: Validity,
    ) -> anyhow::Result<IssuedCertificate> {
        let (subject_alt_names, extended_key_usages) = match server_hosts {
            Some(hosts) => (
                hosts.to_vec(),
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            ),
            None => (Vec::new(), vec![ExtendedKeyUsagePurpose::ClientAuth]),
        };
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, common_name);
        subject.push(DnType::OrganizationName, "Strife etcd");
        self.sign_leaf(subject, subject_alt_names, extended_key_usages, validity)
    }
}

impl CertificateAuthority {
    /// A CRL signed by this CA listing `serials` (raw DER serial bytes), valid a year.
    pub fn revocation_list(&self, serials: Vec<Vec<u8>>) -> anyhow::Result<String> {
        let now = OffsetDateTime::now_utc();
        let revoked_certs = serials
            .into_iter()
            .map(|serial| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: now,
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now - CLOCK_SKEW_ALLOWANCE,
            next_update: now + LEAF_VALIDITY,
            // Each new list must number higher than the last: the time does.
            crl_number: SerialNumber::from(now.unix_timestamp().unsigned_abs()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// Hosts a server certificate names when setup is given none: loopback.
pub fn default_hosts() -> Vec<String> {
    vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
}

/// Whether an existing certificate already has the profile this version issues for its role
/// (a server certificate carries its identity name; a user certificate cannot serve TLS).
/// Setup reissues certificates made by older versions, which pinning would refuse.
pub fn has_current_profile(certificate_pem: &str, role: PeerRole, name: &str) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(certificate_pem.as_bytes()) else {
        return false;
    };
    let Ok(certificate) = pem.parse_x509() else {
        return false;
    };
    let dns_names: Vec<String> = match certificate.subject_alternative_name() {
        Ok(Some(extension)) => extension
            .value
            .general_names
            .iter()
            .filter_map(|general_name| match general_name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(_) => return false,
    };
    let server_auth = matches!(
        certificate.extended_key_usage(),
        Ok(Some(usage)) if usage.value.server_auth
    );
    match role {
        PeerRole::User => !server_auth && dns_names.is_empty(),
        PeerRole::Gateway | PeerRole::Bank => {
            server_auth && dns_names.contains(&identity_dns_name(role, name))
        }
    }
}
