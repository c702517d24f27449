//! A real token closes every session of the application under keybridge
//! (C_CloseAllSessions from another context on the same module, as an HA
//! failover or a token reset does): the login and the cached unwrapped KEK
//! are gone. The next restore must reopen a session, log in again, unwrap
//! again and return the same DEK. Its own test binary, so closing every
//! session cannot disturb other tests.
// cryptoki 0.12 has no C_CloseAllSessions; the test calls it through
// cryptoki-sys, on the same module mapping.
#![allow(unsafe_code)]

mod common;

use common::{actor, password, test_kdf, Kind, Rig};
use keybridge::flows::{backup, clients, pool_creation, restore};

fn close_all_sessions(kind: Kind) {
    let (_ctx, slot) = common::test_token(kind);
    let module = kind.module().expect("module checked by the caller");
    // SAFETY: loads the module already mapped by this process and calls one
    // PKCS#11 function with a valid slot id.
    // Kryoptic exports only C_GetFunctionList, so go through the table.
    let rv = unsafe {
        let raw = cryptoki_sys::Pkcs11::new(&module).unwrap();
        let mut list: cryptoki_sys::CK_FUNCTION_LIST_PTR = std::ptr::null_mut();
        assert_eq!(raw.C_GetFunctionList(&mut list), cryptoki_sys::CKR_OK);
        ((*list).C_CloseAllSessions.expect("C_CloseAllSessions in the function list"))(slot.id())
    };
    assert_eq!(rv, cryptoki_sys::CKR_OK, "C_CloseAllSessions");
}

async fn survives_session_loss(kind: Kind) {
    let Some(rig) = Rig::new(kind) else { return };
    let kb = rig.open();
    pool_creation::create_pool(&kb, "p", "kms", &pool_creation::PoolOptions { kek_bits: 2048, master_key: None }, &actor()).await.unwrap();
    clients::add_client(&kb, "c", &password("client-password"), test_kdf(), &actor()).await.unwrap();
    let g1 = backup::issue_dek(&kb, "p", "c", &actor()).await.unwrap();
    let g2 = backup::issue_dek(&kb, "p", "c", &actor()).await.unwrap();
    let (d1, _) = restore::recover_inner(&kb, &g1.dek_id, "c", &actor()).await.unwrap(); // warms the KEK cache

    close_all_sessions(kind);

    let (again, _) = restore::recover_inner(&kb, &g1.dek_id, "c", &actor()).await.unwrap();
    assert_eq!(again, d1);
    let (d2, _) = restore::recover_inner(&kb, &g2.dek_id, "c", &actor()).await.unwrap();
    let opened = keybridge_proto::seal::open(&g2.sealed_dek, "c", &password("client-password")).unwrap().1;
    assert_eq!(d2, opened);

    // A pool can still be created: the login was restored.
    close_all_sessions(kind);
    pool_creation::create_pool(&kb, "p2", "kms", &pool_creation::PoolOptions { kek_bits: 2048, master_key: None }, &actor()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softhsm_survives_session_loss() {
    survives_session_loss(Kind::SoftHsm).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kryoptic_survives_session_loss() {
    survives_session_loss(Kind::Kryoptic).await
}
