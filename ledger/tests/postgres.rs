//! The PostgreSQL ledger against a real server: the shared behaviour of every
//! ledger, and what several gateways sharing one database rely on.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::pg::PgServer;
use tollgate_ledger::{Ledger, LedgerError, PostgresLedger, ReceiptSink};

async fn fresh() -> (PgServer, PostgresLedger) {
    let server = PgServer::start().await;
    let ledger = PostgresLedger::connect(&server.url).await.unwrap();
    (server, ledger)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_behaviour_of_every_ledger() {
    let server = PgServer::start().await;
    // One database per behaviour, so each starts empty.
    for (i, name) in [
        "records",
        "duplicates",
        "together",
        "amounts",
        "batches",
        "states",
        "payers",
        "at-once",
    ]
    .iter()
    .enumerate()
    {
        let (client, conn) = tokio_postgres::connect(&server.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE t{i}"))
            .await
            .unwrap();
        let url = server.url.replace("/postgres", &format!("/t{i}"));
        let ledger: Arc<dyn Ledger> = Arc::new(PostgresLedger::connect(&url).await.unwrap());
        match *name {
            "records" => {
                common::concurrent_records_all_land_once(ledger.clone()).await;
                // Another gateway on the same database sees the same receipts.
                common::assert_landed(&PostgresLedger::connect(&url).await.unwrap()).await;
            }
            "duplicates" => {
                common::same_receipt_twice_is_a_no_op_and_a_different_one_is_refused(
                    ledger.as_ref(),
                )
                .await
            }
            "together" => {
                common::a_requests_receipts_land_together_or_not_at_all(ledger.as_ref()).await
            }
            "amounts" => common::amounts_above_u64_are_kept_exactly(ledger.as_ref()).await,
            "batches" => common::a_batch_moves_receipts_all_or_nothing(ledger.as_ref()).await,
            "states" => {
                common::batch_states_move_forward_and_back_only_on_reorg(ledger.as_ref()).await
            }
            "payers" => {
                common::unsettled_spend_is_per_payer_and_set_aside_receipts_leave_it(
                    ledger.as_ref(),
                )
                .await
            }
            "at-once" => common::one_receipt_per_id_when_recorded_at_once(ledger.clone()).await,
            _ => unreachable!(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_racing_to_batch_the_same_receipts_batch_each_once() {
    let (server, a) = fresh().await;
    let b = PostgresLedger::connect(&server.url).await.unwrap();
    for i in 0..40 {
        a.record(common::receipt(&format!("r{i}"), "acct", 1))
            .await
            .unwrap();
    }
    let ids: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
    let (ra, rb) = tokio::join!(
        a.create_batch(common::batch("ba", 40, 40), ids.clone()),
        b.create_batch(common::batch("bb", 40, 40), ids.clone()),
    );
    let won: Vec<&str> = [("ba", &ra), ("bb", &rb)]
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(won.len(), 1, "exactly one batch wins: {ra:?} {rb:?}");
    let lost = if ra.is_ok() { rb } else { ra };
    assert!(matches!(lost, Err(LedgerError::NotPending(_))), "{lost:?}");
    let all = a.receipts().await.unwrap();
    assert!(all.iter().all(|r| r.batch_id.as_deref() == Some(won[0])));
    assert_eq!(
        a.batches().await.unwrap().len(),
        1,
        "the loser left no batch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_has_one_holder_until_it_expires() {
    let (server, a) = fresh().await;
    let b = PostgresLedger::connect(&server.url).await.unwrap();
    let ttl = Duration::from_millis(600);
    assert!(a.hold_lease("settler", "gw-a", ttl).await.unwrap());
    assert!(!b.hold_lease("settler", "gw-b", ttl).await.unwrap());
    // The holder renews; others still wait.
    assert!(a.hold_lease("settler", "gw-a", ttl).await.unwrap());
    assert!(!b.hold_lease("settler", "gw-b", ttl).await.unwrap());
    // Another lease is independent.
    assert!(b.hold_lease("other", "gw-b", ttl).await.unwrap());
    // gw-a stops renewing: once it expires, gw-b takes it and gw-a is out.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert!(b.hold_lease("settler", "gw-b", ttl).await.unwrap());
    assert!(!a.hold_lease("settler", "gw-a", ttl).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_starting_together_apply_each_migration_once() {
    let server = PgServer::start().await;
    let (a, b, c) = tokio::join!(
        PostgresLedger::connect(&server.url),
        PostgresLedger::connect(&server.url),
        PostgresLedger::connect(&server.url),
    );
    let (a, _b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let (client, conn) = tokio_postgres::connect(&server.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    a.record(common::receipt("r", "acct", 1)).await.unwrap();
}

#[tokio::test]
async fn a_bad_url_and_a_server_that_is_not_there_are_clear_errors() {
    let err = PostgresLedger::connect("not a url").await.err().unwrap();
    assert!(err.to_string().contains("bad PostgreSQL URL"), "{err}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = PostgresLedger::connect(&format!("postgresql://x@127.0.0.1:{port}/db"))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("ledger database error"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audits_counted_by_one_gateway_are_read_by_another_and_the_first_quarantine_stands() {
    let (server, a) = fresh().await;
    let b = PostgresLedger::connect(&server.url).await.unwrap();
    common::audits_are_counted_and_the_first_quarantine_stands(&a, &b).await;
}
