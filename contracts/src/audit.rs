//! What finance asks of the chain: the invoices, one receipt's proof, and
//! whether the ledger and the chain agree to the wei.

use std::collections::BTreeMap;
use std::path::Path;

use alloy::primitives::{B256, U256};
use serde::Serialize;
use tollgate_ledger::{BatchState, Ledger, LedgerError, Receipt, ReceiptState, StoredReceipt};

use crate::chain::Chain;
use crate::receipt::{self, ReceiptError};
use crate::settler::build_tree;

/// Why an audit question could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The chain failed or is unreachable.
    #[error("chain RPC failed: {0}")]
    Chain(String),
    /// No such request in the ledger.
    #[error("no receipt for request '{0}' in the ledger")]
    UnknownRequest(String),
    /// No such invoice on chain.
    #[error("no invoice '{0}' on chain")]
    UnknownBatch(String),
    /// The receipt is not in an invoice yet.
    #[error("request '{0}' is not in an invoice yet (still pending)")]
    NotInvoiced(String),
    /// A receipts file could not be used.
    #[error("receipts file {path}: {reason}")]
    ReceiptsFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A receipt cannot be put in on-chain form.
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    /// The contract rejected the receipt and proof.
    #[error("the Settlement contract rejects request '{request_id}' against invoice {batch_id}: the receipt or its proof does not match the on-chain root")]
    ProofRejected {
        /// The request.
        request_id: String,
        /// The invoice.
        batch_id: String,
    },
}

fn rpc<E: std::fmt::Display>(e: E) -> AuditError {
    AuditError::Chain(e.to_string())
}

/// One (payer, provider) line of an on-chain invoice.
#[derive(Clone, Debug, Serialize)]
pub struct InvoiceLine {
    /// Who paid.
    pub payer: String,
    /// Who was paid.
    pub provider: String,
    /// What the invoice billed, atto-units.
    pub billed: String,
    /// What escrow covered, atto-units.
    pub paid: String,
}

/// An invoice as its events tell it.
#[derive(Clone, Debug, Serialize)]
pub struct OnchainInvoice {
    /// Content-derived id.
    pub batch_id: String,
    /// Merkle root of its receipts.
    pub merkle_root: String,
    /// Number of receipts.
    pub receipt_count: u32,
    /// Total billed, atto-units.
    pub billed: String,
    /// Total collected from escrow, atto-units.
    pub paid: String,
    /// The protocol's fee, atto-units.
    pub protocol_fee: String,
    /// Where its receipts are published.
    pub uri: String,
    /// The transaction that posted it.
    pub tx_hash: String,
    /// Its block.
    pub block: u64,
    /// Per (payer, provider) amounts.
    pub lines: Vec<InvoiceLine>,
}

/// Every invoice posted since deployment, oldest first.
pub async fn list(chain: &Chain) -> Result<Vec<OnchainInvoice>, AuditError> {
    let s = chain.settlement();
    let from = chain.deployment().deploy_block;
    let posted = s
        .InvoicePosted_filter()
        .from_block(from)
        .query()
        .await
        .map_err(rpc)?;
    let lines = s
        .InvoiceLine_filter()
        .from_block(from)
        .query()
        .await
        .map_err(rpc)?;
    let mut by_batch: BTreeMap<B256, Vec<InvoiceLine>> = BTreeMap::new();
    for (l, _) in lines {
        by_batch.entry(l.batchId).or_default().push(InvoiceLine {
            payer: l.payer.to_string(),
            provider: l.provider.to_string(),
            billed: l.billed.to_string(),
            paid: l.paid.to_string(),
        });
    }
    Ok(posted
        .into_iter()
        .map(|(e, log)| OnchainInvoice {
            batch_id: e.batchId.to_string(),
            merkle_root: e.merkleRoot.to_string(),
            receipt_count: e.receiptCount,
            billed: e.billed.to_string(),
            paid: e.paid.to_string(),
            protocol_fee: e.protocolFee.to_string(),
            uri: e.uri,
            tx_hash: log
                .transaction_hash
                .map(|h| h.to_string())
                .unwrap_or_default(),
            block: log.block_number.unwrap_or_default(),
            lines: by_batch.remove(&e.batchId).unwrap_or_default(),
        })
        .collect())
}

/// One invoice by id.
pub async fn show(chain: &Chain, batch_id: &str) -> Result<OnchainInvoice, AuditError> {
    let wanted: B256 = batch_id
        .parse()
        .map_err(|_| AuditError::UnknownBatch(batch_id.to_string()))?;
    list(chain)
        .await?
        .into_iter()
        .find(|i| i.batch_id == wanted.to_string())
        .ok_or_else(|| AuditError::UnknownBatch(batch_id.to_string()))
}

/// A receipt proved against its on-chain invoice.
#[derive(Clone, Debug, Serialize)]
pub struct Proof {
    /// The request.
    pub request_id: String,
    /// The invoice it is in.
    pub batch_id: String,
    /// Its position among the invoice's receipts.
    pub index: usize,
    /// keccak256 of the ABI-encoded receipt.
    pub leaf: String,
    /// The invoice's root.
    pub merkle_root: String,
    /// The sibling path.
    pub proof: Vec<String>,
    /// The receipt's amount, atto-units.
    pub amount: String,
    /// Tokens x prices, as the contract computes it.
    pub amount_from_prices: String,
    /// The contract's `verifyReceipt` answer.
    pub verified_on_chain: bool,
}

/// Reads a published receipts file (a JSON array of receipts in leaf order).
pub fn read_receipts_file(path: &Path) -> Result<Vec<Receipt>, AuditError> {
    let err = |reason: String| AuditError::ReceiptsFile {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let receipts: Vec<Receipt> = serde_json::from_str(&text)
        .map_err(|e| err(format!("not a JSON array of receipts: {e}")))?;
    if receipts.is_empty() {
        return Err(err("it holds no receipts".into()));
    }
    Ok(receipts)
}

/// Proves one request's receipt against its on-chain invoice, using the
/// ledger's copy of the batch or a published receipts file.
pub async fn verify(
    chain: &Chain,
    ledger: &dyn Ledger,
    request_id: &str,
    receipts_file: Option<&Path>,
) -> Result<Proof, AuditError> {
    let stored = ledger
        .receipt(request_id)
        .await?
        .ok_or_else(|| AuditError::UnknownRequest(request_id.to_string()))?;
    let batch_id = stored
        .batch_id
        .ok_or_else(|| AuditError::NotInvoiced(request_id.to_string()))?;
    let receipts = match receipts_file {
        Some(path) => read_receipts_file(path)?,
        None => ledger.batch_receipts(&batch_id).await?,
    };
    let index = receipts
        .iter()
        .position(|r| r.request_id == request_id)
        .ok_or_else(|| AuditError::ReceiptsFile {
            path: receipts_file
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "ledger".into()),
            reason: format!("request '{request_id}' is not among its receipts"),
        })?;
    let (tree, onchain) = build_tree(&receipts)?;
    let proof = tree.proof(index).unwrap_or_default();
    let id: B256 = batch_id
        .parse()
        .map_err(|_| AuditError::UnknownBatch(batch_id.clone()))?;
    let s = chain.settlement();
    let invoice = s.invoices(id).call().await.map_err(rpc)?;
    if invoice.receiptCount == 0 {
        return Err(AuditError::UnknownBatch(batch_id));
    }
    let r = &onchain[index];
    let verified = s
        .verifyReceipt(id, r.clone(), proof.clone())
        .call()
        .await
        .map_err(rpc)?;
    let from_prices = s
        .receiptAmount(
            r.promptTokens,
            r.completionTokens,
            r.priceInPer1M,
            r.priceOutPer1M,
        )
        .call()
        .await
        .map_err(rpc)?;
    if !verified || from_prices != r.amount {
        return Err(AuditError::ProofRejected {
            request_id: request_id.to_string(),
            batch_id,
        });
    }
    Ok(Proof {
        request_id: request_id.to_string(),
        batch_id,
        index,
        leaf: receipt::leaf(r).to_string(),
        merkle_root: invoice.merkleRoot.to_string(),
        proof: proof.iter().map(ToString::to_string).collect(),
        amount: r.amount.to_string(),
        amount_from_prices: from_prices.to_string(),
        verified_on_chain: verified,
    })
}

/// One disagreement between ledger and chain.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Difference {
    /// The invoice concerned.
    pub batch_id: String,
    /// What disagrees.
    pub what: String,
    /// The ledger's side.
    pub ledger: String,
    /// The chain's side.
    pub chain: String,
}

/// Ledger against chain, to the wei.
#[derive(Clone, Debug, Serialize)]
pub struct Reconciliation {
    /// Invoices the ledger says are settled.
    pub settled_invoices: usize,
    /// Receipts in them.
    pub settled_receipts: u64,
    /// What the ledger billed in them, atto-units.
    pub ledger_billed: String,
    /// What the chain's invoices billed, atto-units.
    pub chain_billed: String,
    /// |ledger - chain| summed over invoices, atto-units.
    pub difference_wei: String,
    /// What escrow could not cover (reported by `PayerShortfall`), atto-units.
    pub shortfall_wei: String,
    /// Receipts that cannot go on chain (listed in `differences`).
    pub unsettleable_receipts: usize,
    /// Receipts not yet in a settled invoice (pending or on their way).
    pub unsettled_receipts: usize,
    /// Their amount, atto-units.
    pub unsettled_wei: String,
    /// Every disagreement found.
    pub differences: Vec<Difference>,
}

/// Compares every settled batch in the ledger with its on-chain invoice
/// (root, count, amount, and the root recomputed from the ledger's receipts),
/// and lists on-chain invoices the ledger does not know.
pub async fn reconcile(chain: &Chain, ledger: &dyn Ledger) -> Result<Reconciliation, AuditError> {
    let onchain = list(chain).await?;
    let mut by_id: BTreeMap<String, OnchainInvoice> = onchain
        .into_iter()
        .map(|i| (i.batch_id.clone(), i))
        .collect();
    let mut differences = Vec::new();
    let (mut ledger_billed, mut chain_billed, mut diff) = (U256::ZERO, U256::ZERO, U256::ZERO);
    let (mut settled_invoices, mut settled_receipts) = (0, 0);
    for batch in ledger.batches().await? {
        let on = by_id.remove(&batch.batch_id);
        if !matches!(batch.state, BatchState::Settled { .. }) {
            continue;
        }
        settled_invoices += 1;
        settled_receipts += batch.receipt_count;
        let billed = U256::from(batch.billed);
        ledger_billed += billed;
        let Some(on) = on else {
            diff += billed;
            differences.push(Difference {
                batch_id: batch.batch_id.clone(),
                what: "settled in the ledger, absent on chain".into(),
                ledger: batch.billed.to_string(),
                chain: "0".into(),
            });
            continue;
        };
        let on_billed: U256 = on.billed.parse().unwrap_or_default();
        chain_billed += on_billed;
        if on_billed != billed {
            diff += on_billed.abs_diff(billed);
            differences.push(Difference {
                batch_id: batch.batch_id.clone(),
                what: "billed amount".into(),
                ledger: batch.billed.to_string(),
                chain: on.billed.clone(),
            });
        }
        let receipts = ledger.batch_receipts(&batch.batch_id).await?;
        let sum: u128 = receipts.iter().map(|r| r.amount).sum();
        let built = build_tree(&receipts);
        let root = built.as_ref().map(|(t, _)| t.root().to_string());
        // Who paid whom, per line, as the ledger's receipts say and as the
        // chain's InvoiceLine events say.
        let ledger_lines = built
            .as_ref()
            .map(|(_, onchain)| {
                line_map(
                    receipt::lines(onchain)
                        .iter()
                        .map(|l| (l.payer, l.provider, l.amount)),
                )
            })
            .unwrap_or_default();
        let chain_lines = line_map(on.lines.iter().filter_map(|l| {
            Some((
                l.payer.parse().ok()?,
                l.provider.parse().ok()?,
                l.billed.parse().ok()?,
            ))
        }));
        let checks = [
            (
                "lines (payer, provider, amount)",
                format!("{ledger_lines:?}"),
                format!("{chain_lines:?}"),
            ),
            (
                "merkle root",
                batch.merkle_root.clone(),
                on.merkle_root.clone(),
            ),
            (
                "receipt count",
                batch.receipt_count.to_string(),
                on.receipt_count.to_string(),
            ),
            (
                "root of the ledger's receipts",
                root.unwrap_or_else(|e| e.to_string()),
                on.merkle_root.clone(),
            ),
            (
                "sum of the ledger's receipts",
                sum.to_string(),
                on.billed.clone(),
            ),
        ];
        for (what, l, c) in checks {
            if l != c {
                differences.push(Difference {
                    batch_id: batch.batch_id.clone(),
                    what: what.into(),
                    ledger: l,
                    chain: c,
                });
            }
        }
    }
    for (id, on) in by_id {
        chain_billed += on.billed.parse::<U256>().unwrap_or_default();
        diff += on.billed.parse::<U256>().unwrap_or_default();
        differences.push(Difference {
            batch_id: id,
            what: "on chain, unknown to the ledger".into(),
            ledger: "0".into(),
            chain: on.billed,
        });
    }
    let s = chain.settlement();
    let shortfalls = s
        .PayerShortfall_filter()
        .from_block(chain.deployment().deploy_block)
        .query()
        .await
        .map_err(rpc)?;
    let shortfall: U256 = shortfalls.iter().map(|(e, _)| e.owed - e.paid).sum();
    let all = ledger.receipts().await?;
    let unsettleable: Vec<&StoredReceipt> = all
        .iter()
        .filter(|r| r.state == ReceiptState::Unsettleable)
        .collect();
    for r in &unsettleable {
        diff += U256::from(r.receipt.amount);
        differences.push(Difference {
            batch_id: String::new(),
            what: format!(
                "receipt {} cannot be settled: {}",
                r.receipt.request_id,
                r.note.as_deref().unwrap_or("no reason recorded")
            ),
            ledger: r.receipt.amount.to_string(),
            chain: "0".into(),
        });
    }
    let unsettled: Vec<&StoredReceipt> = all
        .iter()
        .filter(|r| matches!(r.state, ReceiptState::Pending | ReceiptState::Batched))
        .collect();
    Ok(Reconciliation {
        settled_invoices,
        settled_receipts,
        ledger_billed: ledger_billed.to_string(),
        chain_billed: chain_billed.to_string(),
        difference_wei: diff.to_string(),
        shortfall_wei: shortfall.to_string(),
        unsettleable_receipts: unsettleable.len(),
        unsettled_receipts: unsettled.len(),
        unsettled_wei: unsettled
            .iter()
            .map(|r| r.receipt.amount)
            .sum::<u128>()
            .to_string(),
        differences,
    })
}

/// Lines keyed by (payer, provider), amounts summed, for comparison.
fn line_map(
    lines: impl Iterator<Item = (alloy::primitives::Address, alloy::primitives::Address, U256)>,
) -> BTreeMap<(alloy::primitives::Address, alloy::primitives::Address), U256> {
    let mut map = BTreeMap::new();
    for (payer, provider, amount) in lines {
        *map.entry((payer, provider)).or_insert(U256::ZERO) += amount;
    }
    map
}

/// Every receipt as CSV, with its invoice and settlement transaction.
pub async fn export_csv(ledger: &dyn Ledger) -> Result<String, AuditError> {
    let batches: BTreeMap<String, BatchState> = ledger
        .batches()
        .await?
        .into_iter()
        .map(|b| (b.batch_id, b.state))
        .collect();
    let mut out = String::from(
        "request_id,account,payer,node,provider,model,prompt_tokens,completion_tokens,price_in_per_1m,price_out_per_1m,amount,outcome,finished_at_ms,state,batch_id,tx_hash,block\n",
    );
    for s in ledger.receipts().await? {
        let r = &s.receipt;
        let (tx, block) = match s.batch_id.as_ref().and_then(|b| batches.get(b)) {
            Some(BatchState::Sent { tx_hash, block } | BatchState::Settled { tx_hash, block }) => {
                (tx_hash.clone(), block.to_string())
            }
            _ => (String::new(), String::new()),
        };
        let fields = [
            r.request_id.clone(),
            r.account.clone(),
            r.payer.clone(),
            r.node.clone(),
            r.provider.clone(),
            r.model.clone(),
            r.prompt_tokens.to_string(),
            r.completion_tokens.to_string(),
            r.price_in_per_1m.to_string(),
            r.price_out_per_1m.to_string(),
            r.amount.to_string(),
            serde_json::to_value(r.outcome)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            r.finished_at_ms.to_string(),
            serde_json::to_value(s.state)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            s.batch_id.clone().unwrap_or_default(),
            tx,
            block,
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    Ok(out)
}

/// Quotes a CSV field when it holds a comma, quote or newline.
fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
