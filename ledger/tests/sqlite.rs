//! The SQLite ledger against a real database file: the shared behaviour of
//! every ledger (`common`), and what survives closing and reopening the file.

mod common;

use std::sync::Arc;

use tollgate_ledger::{BatchState, Ledger, ReceiptState, SqliteLedger, TrustStore};

fn fresh() -> (tempfile::TempDir, SqliteLedger) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = SqliteLedger::open(dir.path().join("l.sqlite")).unwrap();
    (dir, ledger)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_records_all_land_once_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d/ledger.sqlite");
    let ledger: Arc<dyn Ledger> = Arc::new(SqliteLedger::open(&path).unwrap());
    common::concurrent_records_all_land_once(ledger.clone()).await;
    drop(ledger);
    common::assert_landed(&SqliteLedger::open(&path).unwrap()).await;
}

#[tokio::test]
async fn same_receipt_twice_is_a_no_op_and_a_different_one_is_refused() {
    let (_dir, ledger) = fresh();
    common::same_receipt_twice_is_a_no_op_and_a_different_one_is_refused(&ledger).await;
}

#[tokio::test]
async fn a_requests_receipts_land_together_or_not_at_all() {
    let (_dir, ledger) = fresh();
    common::a_requests_receipts_land_together_or_not_at_all(&ledger).await;
}

#[tokio::test]
async fn amounts_above_u64_are_kept_exactly() {
    let (_dir, ledger) = fresh();
    common::amounts_above_u64_are_kept_exactly(&ledger).await;
}

#[tokio::test]
async fn a_batch_moves_receipts_all_or_nothing() {
    let (_dir, ledger) = fresh();
    common::a_batch_moves_receipts_all_or_nothing(&ledger).await;
}

#[tokio::test]
async fn unsettled_spend_is_per_payer_and_set_aside_receipts_leave_it() {
    let (_dir, ledger) = fresh();
    common::unsettled_spend_is_per_payer_and_set_aside_receipts_leave_it(&ledger).await;
}

#[tokio::test]
async fn batch_states_move_forward_and_back_only_on_reorg_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sqlite");
    common::batch_states_move_forward_and_back_only_on_reorg(&SqliteLedger::open(&path).unwrap())
        .await;
    let ledger = SqliteLedger::open(&path).unwrap();
    let b = ledger.batch("b1").await.unwrap().unwrap();
    assert_eq!(
        b.state,
        BatchState::Settled {
            tx_hash: "0xt2".into(),
            block: 12
        }
    );
    assert_eq!(
        ledger.receipt("r0").await.unwrap().unwrap().state,
        ReceiptState::Settled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_receipt_per_id_when_recorded_at_once() {
    let (_dir, ledger) = fresh();
    common::one_receipt_per_id_when_recorded_at_once(Arc::new(ledger)).await;
}

#[tokio::test]
async fn audits_are_counted_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sqlite");
    let ledger = SqliteLedger::open(&path).unwrap();
    common::audits_are_counted_and_the_first_quarantine_stands(&ledger, &ledger).await;
    drop(ledger);
    let again = SqliteLedger::open(&path).unwrap();
    let n1 = again.trust().await.unwrap().remove(0);
    assert_eq!((n1.passed, n1.failed), (2, 1));
    assert!(n1.quarantine.is_some());
}

#[tokio::test]
async fn one_gateway_holds_every_lease() {
    let (_dir, ledger) = fresh();
    let ttl = std::time::Duration::from_secs(1);
    assert!(ledger.hold_lease("settler", "a", ttl).await.unwrap());
    assert!(ledger.hold_lease("settler", "b", ttl).await.unwrap());
}

#[test]
fn open_existing_refuses_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteLedger::open_existing(dir.path().join("none.sqlite"))
        .err()
        .expect("missing file is an error");
    assert!(err.to_string().contains("no ledger at"), "{err}");
}
