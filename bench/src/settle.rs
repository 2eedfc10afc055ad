//! `tollgate-bench-settle`: what an invoice really costs on chain.
//!
//! Starts anvil (from the pinned npm package), deploys the contracts from
//! Foundry's artifacts, records N receipts in a fresh SQLite ledger, lets the
//! real settler post them as one invoice, and reads the transaction's gas
//! (intrinsic and calldata included). Then proves one receipt on chain and
//! reports the gas of that call as a transaction. Prints one JSON line.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use clap::Parser;
use tollgate_contracts::bindings::Settlement;
use tollgate_contracts::deploy::{self, DeployOptions};
use tollgate_contracts::settler::build_tree;
use tollgate_contracts::{chain, Chain, Settler, SettlerConfig, Step};
use tollgate_ledger::{Ledger, Outcome, Receipt, ReceiptSink, SqliteLedger, UsageSource};

#[derive(Parser)]
struct Args {
    /// Receipts in the invoice.
    #[arg(long, default_value_t = 1000)]
    receipts: usize,
    /// Distinct payers (one invoice line per payer and provider).
    #[arg(long, default_value_t = 5)]
    payers: u8,
    /// Distinct providers.
    #[arg(long, default_value_t = 2)]
    providers: u8,
    /// Port for anvil.
    #[arg(long, default_value_t = 18545)]
    port: u16,
}

// anvil's first development account: a public test key, local chain only.
const DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

struct Anvil(Child);

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn receipt(i: usize, payer: Address, provider: Address) -> Receipt {
    let (pin, pout) = (100_000_000_000_000_000, 200_000_000_000_000_000);
    let (prompt, completion) = (40 + (i % 50) as u64, 64);
    Receipt {
        request_id: format!("bench-{i}"),
        account: payer.to_string(),
        payer: payer.to_string(),
        node: provider.to_string(),
        provider: provider.to_string(),
        model: "smollm2".into(),
        prompt_tokens: prompt,
        completion_tokens: completion,
        price_in_per_1m: pin,
        price_out_per_1m: pout,
        amount: Receipt::amount_for(prompt, completion, pin, pout),
        response_hash: format!("{i:064x}"),
        outcome: Outcome::Completed,
        usage_source: UsageSource::Upstream,
        finished_at_ms: 0,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let rpc = format!("http://127.0.0.1:{}", args.port);
    let _anvil = Anvil(
        Command::new(root.join("scripts/anvil"))
            .args(["--port", &args.port.to_string(), "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let key = chain::parse_key(DEV_KEY)?;
    let admin = key.address();
    let provider = chain::provider(&rpc, Some(key.clone()))?;
    for _ in 0..100 {
        if provider.get_chain_id().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opts = DeployOptions {
        artifacts: root.join("contracts/out"),
        settler: admin,
        treasury: admin,
        protocol_fee_bps: 100,
        withdrawal_delay_s: 86_400,
        unbonding_delay_s: 604_800,
    };
    let deployment = deploy::deploy(&provider, admin, &opts).await?;
    let payers: Vec<Address> = (1..=args.payers).map(Address::repeat_byte).collect();
    let providers: Vec<Address> = (1..=args.providers)
        .map(|i| Address::repeat_byte(0x80 + i))
        .collect();
    for payer in &payers {
        deploy::fund_escrow(
            &provider,
            &deployment,
            admin,
            *payer,
            U256::from(10u128.pow(21)),
        )
        .await?;
    }

    let dir = tempfile::tempdir()?;
    let ledger = Arc::new(SqliteLedger::open(dir.path().join("ledger.sqlite"))?);
    let receipts: Vec<Receipt> = (0..args.receipts)
        .map(|i| receipt(i, payers[i % payers.len()], providers[i % providers.len()]))
        .collect();
    for r in &receipts {
        ledger.record(r.clone()).await?;
    }
    let chain = Chain::connect(&rpc, Some(key), deployment.clone()).await?;
    let config = SettlerConfig {
        max_receipts: args.receipts,
        invoices_dir: dir.path().join("invoices"),
        ..SettlerConfig::default()
    };
    let settler = Settler::new(ledger.clone(), chain.clone(), config);
    let batch_id = loop {
        if let Step::Settled(id) = settler.step().await? {
            break id;
        }
    };
    let batch = ledger
        .batch(&batch_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("batch lost"))?;
    let tx_hash = match batch.state {
        tollgate_ledger::BatchState::Settled { tx_hash, .. } => tx_hash.parse()?,
        other => anyhow::bail!("batch not settled: {other:?}"),
    };
    let landed = provider
        .get_transaction_receipt(tx_hash)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no receipt for {tx_hash}"))?;
    let invoice_gas = landed.gas_used;

    // One claim: prove the middle receipt, as a transaction would.
    let (tree, onchain) = build_tree(&receipts)?;
    let index = receipts.len() / 2;
    let call = Settlement::verifyReceiptCall {
        batchId: batch_id.parse()?,
        r: onchain[index].clone(),
        proof: tree.proof(index).unwrap_or_default(),
    };
    let tx = TransactionRequest::default()
        .to(deployment.settlement)
        .input(call.abi_encode().into());
    let claim_gas = provider.estimate_gas(tx).await?;
    let verified = chain
        .settlement()
        .verifyReceipt(call.batchId, call.r.clone(), call.proof.clone())
        .call()
        .await?;
    anyhow::ensure!(verified, "the contract rejected a correct proof");

    println!(
        "{}",
        serde_json::json!({
            "receipts_per_invoice": args.receipts,
            "invoice_lines": payers.len() * providers.len(),
            "invoice_tx_gas": invoice_gas,
            "gas_per_request_tx": invoice_gas as f64 / args.receipts as f64,
            "claim_tx_gas": claim_gas,
            "proof_len": call.proof.len(),
        })
    );
    Ok(())
}
