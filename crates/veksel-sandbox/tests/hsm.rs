//! Members' signing keys in an HSM through PKCS#11, against SoftHSM2: the municipality's
//! gateway enrols with its signing key generated in the token (sensitive, not
//! extractable), exchanges are signed there and accepted by the provider, and a
//! renewal rotates to a new key in the token with no key file ever written. Needs
//! SoftHSM2 (`apt-get install softhsm2`; `.ci/run` installs it). SQLite only: the key
//! store does not touch the database.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use veksel_gateway::signing::HsmConfig;
use veksel_pki::CertInfo;
use veksel_pki::hsm::{Hsm, softhsm};
use veksel_sandbox::ORGS;

const TOKEN: &str = "veksel-sandbox";
const PIN: &str = "4711";

/// Runs in a child process with a fresh token (see [`softhsm`]).
#[test]
fn signing_keys_in_softhsm_sign_exchanges_and_rotate() {
    if let Some(dir) = std::env::var_os(softhsm::CHILD_ENV) {
        let dir = PathBuf::from(dir);
        return tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(in_child(&dir));
    }
    let tmp = tempfile::tempdir().unwrap();
    let conf = softhsm::init_token(tmp.path(), TOKEN, "12345678", PIN).unwrap();
    if let Err(out) = softhsm::rerun_test(
        &conf,
        tmp.path(),
        "signing_keys_in_softhsm_sign_exchanges_and_rotate",
    ) {
        panic!("{out}");
    }
}

/// The member's signing certificate in use.
fn signing_cert(dir: &Path, stem: &str) -> Vec<u8> {
    let path = dir.join("signing").join(format!("{stem}.pem"));
    veksel_pki::certs_from_pem(&std::fs::read_to_string(path).unwrap())
        .unwrap()
        .remove(0)
}

/// The label of the member's key in the token, from its reference file.
fn hsm_label(dir: &Path, stem: &str) -> String {
    let text = std::fs::read_to_string(dir.join("signing").join(format!("{stem}.hsm"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["label"].as_str().unwrap().to_owned()
}

/// Makes a call from the municipality and returns the certificate that signed the
/// request, as the provider logged it.
async fn exchange_signer(net: &Net, client: &str, target: &str) -> Vec<u8> {
    let r = net.r1(MUNICIPALITY, client, target).await;
    let status = r.status();
    let id = r
        .headers()
        .get("x-road-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(status, 200, "{}", r.text().await.unwrap());
    let id = id.unwrap();
    let record = &message_log(net, POPULATION, &format!("request_id={id}")).await[0];
    message_signing_cert(
        net,
        POPULATION,
        record["request_signature"].as_str().unwrap(),
    )
    .await
}

async fn in_child(dir: &Path) {
    let pin_file = dir.join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let config = HsmConfig {
        module: softhsm::module_path(),
        token_label: TOKEN.into(),
        pin_file,
    };
    let hsm_config = config.clone();
    let net = Net::start_with(Backend::Sqlite, |o| {
        o.conf_refresh_secs = 1;
        o.hsm.insert(MUNICIPALITY, hsm_config);
    })
    .await
    .unwrap();
    let gw = net.sandbox().gateway(MUNICIPALITY).unwrap().clone();
    let owner = gw.config.id.owner().to_string().replace('/', ":");
    let signing = gw.dir.join("signing");

    // The signing key is in the token, referenced by label; no key file exists. The
    // authentication key stays a file (TLS).
    assert!(!signing.join(format!("{owner}.key")).exists());
    let label = hsm_label(&gw.dir, &owner);
    let hsm = Hsm::open(&config.module, TOKEN, PIN).unwrap();
    assert!(
        hsm.key_is_protected(&label).unwrap(),
        "sensitive, not extractable"
    );
    let cert = signing_cert(&gw.dir, &owner);
    assert_eq!(
        CertInfo::parse(&cert).unwrap().public_key,
        hsm.key(&label).unwrap().public_key()
    );
    // The other gateways keep key files.
    let pop = net.sandbox().gateway(POPULATION).unwrap().clone();
    let pop_owner = pop.config.id.owner().to_string().replace('/', ":");
    assert!(
        pop.dir
            .join("signing")
            .join(format!("{pop_owner}.key"))
            .exists()
    );

    // An exchange signed in the token is accepted and logged by the provider with the
    // HSM key's certificate.
    let muni = ORGS[MUNICIPALITY].subsystem_id();
    let target = format!("{}/persons/0101701234", ORGS[POPULATION].subsystem_id());
    assert_eq!(exchange_signer(&net, &muni, &target).await, cert);

    // Renewal makes a new key in the token and switches to it.
    renew_now(&gw).await;
    let new_label = hsm_label(&gw.dir, &owner);
    assert_ne!(new_label, label);
    assert!(!signing.join(format!("{owner}.key")).exists());
    let new_cert = signing_cert(&gw.dir, &owner);
    assert_eq!(
        CertInfo::parse(&new_cert).unwrap().public_key,
        hsm.key(&new_label).unwrap().public_key()
    );
    assert_eq!(exchange_signer(&net, &muni, &target).await, new_cert);

    // A wrong PIN keeps the gateway from loading its keys, with a precise error.
    std::fs::write(&config.pin_file, "0000").unwrap();
    let err = veksel_gateway::KeyStore::load(&gw.dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("logging in"), "{err}");
    std::fs::write(&config.pin_file, PIN).unwrap();
    net.stop().await;
}
