use std::os::unix::fs::PermissionsExt;

use strife_common::net::connection::{identity_from_der, PeerIdentity, PeerRole};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;

fn options(dir: &std::path::Path) -> SetupOptions {
    SetupOptions {
        dir: dir.to_owned(),
        banks: vec!["bank0".into(), "bank1".into()],
        users: vec!["alice".into()],
        force: false,
        hosts: Default::default(),
    }
}

fn der_of(path: &std::path::Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    x509_parser::pem::parse_x509_pem(&pem).unwrap().1.contents
}

#[test]
fn setup_makes_every_identity_with_private_keys_0600() {
    let dir = tempfile::tempdir().unwrap();
    let report = setup(&options(dir.path())).unwrap();
    assert!(report.new_admin_password.as_ref().unwrap().len() >= 20);
    let layout = Layout::new(dir.path());
    let expected = [
        (layout.gateway_identity(), PeerRole::Gateway, "gateway"),
        (layout.bank_identity("bank0"), PeerRole::Bank, "bank0"),
        (layout.bank_identity("bank1"), PeerRole::Bank, "bank1"),
        (layout.user_identity("admin"), PeerRole::User, "admin"),
        (layout.user_identity("alice"), PeerRole::User, "alice"),
    ];
    for (paths, role, name) in expected {
        let der = der_of(&paths.cert);
        let identity = identity_from_der(&der).unwrap();
        assert_eq!(
            identity,
            PeerIdentity {
                role,
                name: name.into()
            }
        );
        let (_, certificate) = X509Certificate::from_der(&der).unwrap();
        let usage = certificate.extended_key_usage().unwrap().unwrap().value;
        assert!(usage.client_auth);
        let sans = certificate.subject_alternative_name().unwrap();
        if role == PeerRole::User {
            // A user certificate can never serve TLS: no serverAuth, no name to serve.
            assert!(!usage.server_auth, "{name}");
            assert!(sans.is_none(), "{name}");
        } else {
            assert!(usage.server_auth, "{name}");
            let rendered = format!("{:?}", sans.unwrap().value.general_names);
            let identity = strife_common::net::tls::identity_dns_name(role, name);
            assert!(
                rendered.contains("localhost")
                    && rendered.contains("[127, 0, 0, 1]")
                    && rendered.contains(&identity),
                "{rendered}"
            );
        }
        let pem = std::fs::read_to_string(&paths.cert).unwrap();
        assert!(has_current_profile(&pem, role, name), "{name}");
        let mode = std::fs::metadata(&paths.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", paths.key.display());
    }
    let mode = std::fs::metadata(layout.admin_password())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        read_admin_password(&layout).unwrap(),
        report.new_admin_password.unwrap()
    );
    let mode = std::fs::metadata(layout.ca().key)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn rerun_keeps_keys_and_only_adds_missing_identities() {
    let dir = tempfile::tempdir().unwrap();
    setup(&options(dir.path())).unwrap();
    let layout = Layout::new(dir.path());
    let gateway_key = std::fs::read(layout.gateway_identity().key).unwrap();
    let password = read_admin_password(&layout).unwrap();

    let mut again = options(dir.path());
    again.users.push("bob".into());
    let report = setup(&again).unwrap();
    assert!(report.new_admin_password.is_none());
    assert_eq!(
        std::fs::read(layout.gateway_identity().key).unwrap(),
        gateway_key
    );
    assert_eq!(read_admin_password(&layout).unwrap(), password);
    assert_eq!(report.created, vec![layout.user_identity("bob").cert]);
    let manifest = strife_common::setup_manifest::SetupManifest::load(&layout).unwrap();
    assert_eq!(manifest.users, vec!["alice".to_string(), "bob".to_string()]);
}

#[test]
fn force_replaces_every_key() {
    let dir = tempfile::tempdir().unwrap();
    setup(&options(dir.path())).unwrap();
    let layout = Layout::new(dir.path());
    let gateway_key = std::fs::read(layout.gateway_identity().key).unwrap();
    let ca_key = std::fs::read(layout.ca().key).unwrap();
    let mut forced = options(dir.path());
    forced.force = true;
    let report = setup(&forced).unwrap();
    assert!(report.new_admin_password.is_some());
    assert_ne!(
        std::fs::read(layout.gateway_identity().key).unwrap(),
        gateway_key
    );
    assert_ne!(std::fs::read(layout.ca().key).unwrap(), ca_key);
}

#[test]
fn bad_names_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = options(dir.path());
    bad.users = vec!["../evil".into()];
    assert!(setup(&bad).is_err());
    assert!(!Layout::new(dir.path()).ca().key.exists());
    bad.users = vec!["admin".into()];
    assert!(setup(&bad).is_err());
}

#[test]
fn hosts_go_into_server_certificates_and_old_profiles_are_reissued() {
    let dir = tempfile::tempdir().unwrap();
    setup(&options(dir.path())).unwrap();
    let layout = Layout::new(dir.path());
    // A certificate with an outdated profile (a user certificate that could serve TLS, as
    // earlier versions issued) is replaced by the next setup run; current ones are kept.
    let ca = CertificateAuthority::load(&layout.ca()).unwrap();
    let old = ca
        .issue_for_hosts(
            PeerRole::Gateway,
            "alice",
            &default_hosts(),
            Validity::default_leaf(),
        )
        .unwrap();
    std::fs::write(layout.user_identity("alice").cert, &old.certificate_pem).unwrap();
    let mut again = options(dir.path());
    again
        .hosts
        .insert("bank0".into(), vec!["bank0.example.com".into()]);
    let report = setup(&again).unwrap();
    assert!(report.created.contains(&layout.user_identity("alice").cert));
    assert!(report.created.contains(&layout.bank_identity("bank0").cert));
    assert!(report.kept.contains(&layout.bank_identity("bank1").cert));
    let der = der_of(&layout.bank_identity("bank0").cert);
    let (_, certificate) = X509Certificate::from_der(&der).unwrap();
    let rendered = format!(
        "{:?}",
        certificate
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
    );
    assert!(rendered.contains("bank0.example.com"), "{rendered}");
    let mut unknown = options(dir.path());
    unknown.hosts.insert("bank9".into(), vec!["x".into()]);
    assert!(setup(&unknown).is_err());
}

#[test]
fn revoke_lists_the_serial_moves_the_certificate_and_deletes_the_key() {
    let dir = tempfile::tempdir().unwrap();
    setup(&options(dir.path())).unwrap();
    let layout = Layout::new(dir.path());
    let alice = layout.user_identity("alice");
    let serial = {
        let der = der_of(&alice.cert);
        let (_, certificate) = X509Certificate::from_der(&der).unwrap();
        certificate.raw_serial().to_vec()
    };
    let moved = revoke(&layout, &["alice".into()]).unwrap();
    assert_eq!(moved.len(), 1);
    assert!(moved[0].exists() && !alice.cert.exists() && !alice.key.exists());
    let (_, serials) = strife_common::net::revocation::read_crl(&layout.ca_crl()).unwrap();
    assert!(serials.contains(&serial));
    // A second revocation keeps the first in the list.
    revoke(&layout, &["bank/bank1".into()]).unwrap();
    let (_, serials) = strife_common::net::revocation::read_crl(&layout.ca_crl()).unwrap();
    assert_eq!(serials.len(), 2);
    assert!(serials.contains(&serial));
    // Unknown names and names already revoked are refused, nothing changes.
    assert!(revoke(&layout, &["nobody".into()]).is_err());
    assert!(revoke(&layout, &["alice".into()]).is_err());
    assert!(revoke(&layout, &["team/x".into()]).is_err());
    // Setup issues alice a fresh certificate, which is not revoked.
    setup(&options(dir.path())).unwrap();
    let der = der_of(&alice.cert);
    let (_, certificate) = X509Certificate::from_der(&der).unwrap();
    assert!(!serials.contains(certificate.raw_serial()));
}

#[test]
fn a_name_that_is_both_a_bank_and_a_user_must_be_qualified() {
    let dir = tempfile::tempdir().unwrap();
    let mut both = options(dir.path());
    both.users.push("bank0".into());
    setup(&both).unwrap();
    let layout = Layout::new(dir.path());
    assert!(revoke(&layout, &["bank0".into()]).is_err());
    revoke(&layout, &["user/bank0".into()]).unwrap();
    assert!(layout.bank_identity("bank0").cert.exists());
}

#[test]
fn setup_issues_a_server_only_web_certificate_with_a_private_key() {
    let dir = tempfile::tempdir().unwrap();
    setup(&options(dir.path())).unwrap();
    let web = Layout::new(dir.path()).web_identity();
    let mode = std::fs::metadata(&web.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let der = der_of(&web.cert);
    let (_, certificate) = X509Certificate::from_der(&der).unwrap();
    let usage = certificate.extended_key_usage().unwrap().unwrap().value;
    assert!(usage.server_auth && !usage.client_auth);
    // Not a Strife peer identity: no role OU.
    assert!(identity_from_der(&der).is_err());
    let sans = certificate.subject_alternative_name().unwrap().unwrap();
    let rendered = format!("{:?}", sans.value.general_names);
    assert!(rendered.contains("localhost") && rendered.contains("[127, 0, 0, 1]"));
    // Kept on a second run.
    let before = std::fs::read(&web.key).unwrap();
    setup(&options(dir.path())).unwrap();
    assert_eq!(std::fs::read(&web.key).unwrap(), before);
}
