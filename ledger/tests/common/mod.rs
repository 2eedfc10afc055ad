//! Behaviour every `Ledger` must have, run against each implementation.

#![allow(dead_code)]

pub mod pg;

use std::sync::Arc;

use tollgate_ledger::{
    AuditCount, Batch, BatchState, Ledger, LedgerError, Outcome, Receipt, ReceiptState,
    TrustRecord, TrustStore, UsageSource,
};

pub fn receipt(id: &str, account: &str, amount: u128) -> Receipt {
    Receipt {
        request_id: id.into(),
        account: account.into(),
        payer: String::new(),
        node: "n".into(),
        provider: String::new(),
        model: "m".into(),
        prompt_tokens: 1,
        completion_tokens: 2,
        price_in_per_1m: 0,
        price_out_per_1m: 0,
        amount,
        response_hash: String::new(),
        outcome: Outcome::Completed,
        usage_source: UsageSource::Gateway,
        finished_at_ms: 0,
    }
}

pub fn batch(id: &str, count: u64, billed: u128) -> Batch {
    Batch {
        batch_id: id.into(),
        merkle_root: format!("root-{id}"),
        receipt_count: count,
        billed,
        uri: format!("invoices/{id}.json"),
        state: BatchState::Built,
        created_at_ms: 1,
    }
}

/// See the name.
pub async fn same_receipt_twice_is_a_no_op_and_a_different_one_is_refused(ledger: &dyn Ledger) {
    let r = receipt("req-1", "a", 7);
    ledger.record(r.clone()).await.unwrap();
    ledger.record(r.clone()).await.unwrap();
    let err = ledger.record(receipt("req-1", "a", 8)).await.unwrap_err();
    assert!(
        matches!(err, LedgerError::Conflict(ref id) if id == "req-1"),
        "{err}"
    );
    let all = ledger.receipts().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].receipt, r, "the first receipt stands unchanged");
}

/// See the name: a chain's request is billed as one receipt per stage.
pub async fn a_requests_receipts_land_together_or_not_at_all(ledger: &dyn Ledger) {
    let parts = vec![receipt("req-1.s0", "a", 3), receipt("req-1.s1", "a", 4)];
    ledger.record_all(parts.clone()).await.unwrap();
    ledger.record_all(parts.clone()).await.unwrap();
    // A request whose second part conflicts with a stored receipt stores
    // neither part: its new first part is taken back out.
    let err = ledger
        .record_all(vec![
            receipt("req-2.s0", "a", 5),
            receipt("req-1.s1", "a", 9),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::Conflict(ref id) if id == "req-1.s1"),
        "{err}"
    );
    let mut ids: Vec<String> = ledger
        .receipts()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.receipt.request_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["req-1.s0", "req-1.s1"]);
    // Recorded at the same moment as other requests, each keeps its parts.
    let (a, b) = tokio::join!(
        ledger.record_all(vec![
            receipt("req-3.s0", "a", 1),
            receipt("req-3.s1", "a", 1)
        ]),
        ledger.record_all(vec![
            receipt("req-4.s0", "a", 1),
            receipt("req-1.s0", "a", 2)
        ]),
    );
    a.unwrap();
    assert!(matches!(b, Err(LedgerError::Conflict(_))));
    assert!(ledger.receipt("req-3.s1").await.unwrap().is_some());
    assert!(ledger.receipt("req-4.s0").await.unwrap().is_none());
}

/// See the name.
pub async fn amounts_above_u64_are_kept_exactly(ledger: &dyn Ledger) {
    ledger
        .record(receipt("big", "a", u128::MAX / 2))
        .await
        .unwrap();
    ledger.record(receipt("one", "a", 1)).await.unwrap();
    assert_eq!(
        ledger.spend_by_account().await.unwrap()["a"],
        u128::MAX / 2 + 1
    );
}

/// See the name.
pub async fn a_batch_moves_receipts_all_or_nothing(ledger: &dyn Ledger) {
    for i in 0..5 {
        ledger
            .record(receipt(&format!("r{i}"), "a", 1))
            .await
            .unwrap();
    }
    let pending = ledger.pending(3).await.unwrap();
    let ids: Vec<String> = pending.iter().map(|r| r.request_id.clone()).collect();
    assert_eq!(ids, ["r0", "r1", "r2"], "oldest first");

    ledger
        .create_batch(batch("b1", 3, 3), ids.clone())
        .await
        .unwrap();
    assert_eq!(ledger.pending(10).await.unwrap().len(), 2);
    let in_batch: Vec<String> = ledger
        .batch_receipts("b1")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    assert_eq!(in_batch, ids);

    // r2 is already batched: the second batch is refused whole.
    let err = ledger
        .create_batch(
            batch("b2", 3, 3),
            vec!["r3".into(), "r4".into(), "r2".into()],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::NotPending(ref id) if id == "r2"),
        "{err}"
    );
    assert!(ledger.batch("b2").await.unwrap().is_none());
    assert_eq!(
        ledger.pending(10).await.unwrap().len(),
        2,
        "r3, r4 stay pending"
    );

    // Unknown ids are refused too.
    let err = ledger
        .create_batch(batch("b3", 1, 1), vec!["nope".into()])
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::NotPending(_)), "{err}");
}

/// See the name.
pub async fn unsettled_spend_is_per_payer_and_set_aside_receipts_leave_it(ledger: &dyn Ledger) {
    let with_payer = |id: &str, account: &str, payer: &str, amount| Receipt {
        payer: payer.into(),
        ..receipt(id, account, amount)
    };
    // Two accounts share payer 0xAA..; case does not matter.
    ledger
        .record(with_payer("r0", "a", "0xAAaa", 5))
        .await
        .unwrap();
    ledger
        .record(with_payer("r1", "b", "0xaaAA", 7))
        .await
        .unwrap();
    ledger
        .record(with_payer("r2", "c", "0xbb", 11))
        .await
        .unwrap();
    ledger.record(with_payer("r3", "d", "", 13)).await.unwrap();
    let unsettled = ledger.unsettled_by_payer().await.unwrap();
    assert_eq!(unsettled["0xaaaa"], 12);
    assert_eq!(unsettled["0xbb"], 11);

    ledger
        .set_aside("r3", "payer '' is not an address")
        .await
        .unwrap();
    let r3 = ledger.receipt("r3").await.unwrap().unwrap();
    assert_eq!(r3.state, ReceiptState::Unsettleable);
    assert_eq!(r3.note.as_deref(), Some("payer '' is not an address"));
    assert!(!ledger.unsettled_by_payer().await.unwrap().contains_key(""));
    assert_eq!(
        ledger.pending(10).await.unwrap().len(),
        3,
        "no longer queued"
    );
    let err = ledger.set_aside("r3", "again").await.unwrap_err();
    assert!(matches!(err, LedgerError::NotPending(_)), "{err}");

    ledger
        .create_batch(batch("b1", 1, 11), vec!["r2".into()])
        .await
        .unwrap();
    ledger.mark_sent("b1", "0xt", 1).await.unwrap();
    assert_eq!(
        ledger.unsettled_by_payer().await.unwrap()["0xbb"],
        11,
        "sent is not settled"
    );
    ledger.mark_settled("b1", "0xt", 1).await.unwrap();
    assert!(!ledger
        .unsettled_by_payer()
        .await
        .unwrap()
        .contains_key("0xbb"));
}

/// See the name.
pub async fn batch_states_move_forward_and_back_only_on_reorg(ledger: &dyn Ledger) {
    ledger.record(receipt("r0", "a", 1)).await.unwrap();
    ledger
        .create_batch(batch("b1", 1, 1), vec!["r0".into()])
        .await
        .unwrap();

    let err = ledger.mark_unsent("b1").await.unwrap_err();
    assert!(matches!(err, LedgerError::BatchState { .. }), "{err}");
    ledger.mark_sent("b1", "0xt1", 10).await.unwrap();
    ledger.mark_unsent("b1").await.unwrap();
    assert_eq!(
        ledger.batch("b1").await.unwrap().unwrap().state,
        BatchState::Built
    );
    ledger.mark_sent("b1", "0xt2", 12).await.unwrap();
    ledger.mark_settled("b1", "0xt2", 12).await.unwrap();

    let err = ledger.mark_settled("b1", "0xt3", 13).await.unwrap_err();
    assert!(
        matches!(err, LedgerError::BatchState { .. }),
        "settled is final: {err}"
    );
    let err = ledger.mark_sent("nope", "0x", 1).await.unwrap_err();
    assert!(matches!(err, LedgerError::UnknownBatch(_)), "{err}");

    let b = ledger.batch("b1").await.unwrap().unwrap();
    assert_eq!(
        b.state,
        BatchState::Settled {
            tx_hash: "0xt2".into(),
            block: 12
        }
    );
    let r = ledger.receipt("r0").await.unwrap().unwrap();
    assert_eq!(r.state, ReceiptState::Settled);
    assert_eq!(r.batch_id.as_deref(), Some("b1"));
    assert!(ledger.receipt("missing").await.unwrap().is_none());
}

/// 300 receipts recorded at once from two accounts all land, once each.
pub async fn concurrent_records_all_land_once(ledger: Arc<dyn Ledger>) {
    let mut tasks = Vec::new();
    for i in 0..300 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let account = if i % 3 == 0 { "a" } else { "b" };
            ledger
                .record(receipt(&format!("req-{i}"), account, 5))
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_landed(ledger.as_ref()).await;
}

/// What `concurrent_records_all_land_once` left, as a later reader sees it.
pub async fn assert_landed(ledger: &dyn Ledger) {
    let all = ledger.receipts().await.unwrap();
    assert_eq!(all.len(), 300);
    assert!(all.iter().all(|r| r.state == ReceiptState::Pending));
    let totals = ledger.spend_by_account().await.unwrap();
    assert_eq!(totals["a"], 100 * 5);
    assert_eq!(totals["b"], 200 * 5);
}

/// The same receipt and a different one under its id, recorded at once (one
/// group, as concurrent writers make it): one stands, copies of it are no-ops,
/// the other is refused.
pub async fn one_receipt_per_id_when_recorded_at_once(ledger: Arc<dyn Ledger>) {
    let r = receipt("same", "a", 7);
    let other = receipt("same", "a", 8);
    let (x, y, z) = tokio::join!(
        ledger.record(r.clone()),
        ledger.record(r.clone()),
        ledger.record(other.clone())
    );
    let all = ledger.receipts().await.unwrap();
    assert_eq!(all.len(), 1);
    if all[0].receipt == r {
        assert!(x.is_ok() && y.is_ok(), "{x:?} {y:?}");
        assert!(matches!(z, Err(LedgerError::Conflict(_))), "{z:?}");
    } else {
        assert_eq!(all[0].receipt, other);
        assert!(z.is_ok(), "{z:?}");
        assert!(matches!(x, Err(LedgerError::Conflict(_))), "{x:?}");
        assert!(matches!(y, Err(LedgerError::Conflict(_))), "{y:?}");
    }
}

/// Audits counted through `a` and `b` (two gateways on one database, or one
/// gateway twice) add up; the first quarantine stands.
pub async fn audits_are_counted_and_the_first_quarantine_stands(
    a: &dyn TrustStore,
    b: &dyn TrustStore,
) {
    for count in [
        AuditCount::Passed,
        AuditCount::Passed,
        AuditCount::Inconclusive,
    ] {
        a.count_audit("n1", count).await.unwrap();
    }
    b.count_audit("n1", AuditCount::Failed).await.unwrap();
    b.count_audit("n2", AuditCount::Passed).await.unwrap();
    assert!(a.quarantine("n1", r#"{"by":"a"}"#).await.unwrap());
    assert!(
        !b.quarantine("n1", r#"{"by":"b"}"#).await.unwrap(),
        "the first stands"
    );
    assert_eq!(
        b.trust().await.unwrap(),
        [
            TrustRecord {
                node: "n1".into(),
                passed: 2,
                failed: 1,
                inconclusive: 1,
                quarantine: Some(r#"{"by":"a"}"#.into()),
            },
            TrustRecord {
                node: "n2".into(),
                passed: 1,
                failed: 0,
                inconclusive: 0,
                quarantine: None,
            },
        ]
    );
}
