//! `tollgate invoices` and `tollgate chain`: finance's view of the chain, and
//! deploying the contracts for a local or new chain.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use alloy::primitives::{Address, U256};
use anyhow::Context;
use clap::Subcommand;
use std::sync::Arc;
use tollgate_contracts::deploy::{self, DeployOptions};
use tollgate_contracts::{audit, chain, Chain, Deployment};

use tollgate_ledger::{Ledger, PostgresLedger, SqliteLedger};

use crate::config;

/// What finance can ask.
#[derive(Subcommand)]
pub enum InvoicesAction {
    /// Every invoice on chain (from its events), as JSON.
    List,
    /// One invoice by batch id, as JSON.
    Show {
        /// The batch id (0x hex).
        batch: String,
    },
    /// Prove a request's receipt is in its on-chain invoice and that its
    /// amount equals tokens x prices.
    Verify {
        /// The request id (the `x-request-id` header).
        request_id: String,
        /// Prove against a published receipts file instead of the ledger's copy.
        #[arg(long)]
        receipts: Option<PathBuf>,
    },
    /// Compare the ledger with the chain to the wei; exits 1 on any difference.
    Reconcile,
    /// Every receipt with its invoice and transaction.
    Export {
        /// Write CSV (the only format).
        #[arg(long)]
        csv: bool,
    },
}

/// Deploying and funding.
#[derive(Subcommand)]
pub enum ChainAction {
    /// Deploy FeeToken, ProviderRegistry and Settlement and write the deployment file.
    Deploy(DeployArgs),
    /// Register a node in the ProviderRegistry with a stake; gateways then route to it.
    RegisterNode(RegisterArgs),
}

/// `tollgate chain deploy`.
#[derive(clap::Args)]
pub struct DeployArgs {
    /// JSON-RPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8545")]
    rpc_url: String,
    /// Environment variable with the deployer's private key (hex); the
    /// deployer administers the contracts and owns the fee token.
    #[arg(long, default_value = "TOLLGATE_DEPLOYER_KEY")]
    key_env: String,
    /// Foundry's build output.
    #[arg(long, default_value = "contracts/out")]
    artifacts: PathBuf,
    /// Where to write the deployment file.
    #[arg(long, default_value = "data/chain.json")]
    out: PathBuf,
    /// The settler's address (default: the deployer).
    #[arg(long)]
    settler: Option<Address>,
    /// Where protocol fees go (default: the deployer).
    #[arg(long)]
    treasury: Option<Address>,
    /// The protocol's fee in basis points.
    #[arg(long, default_value_t = 100)]
    protocol_fee_bps: u16,
    /// Mint fee tokens and deposit them as a payer's escrow: ADDRESS=AMOUNT
    /// (AMOUNT in fee-token units, e.g. 25.5). Repeatable.
    #[arg(long = "fund", value_name = "ADDRESS=AMOUNT")]
    fund: Vec<String>,
    /// Mint fee tokens to an address (a provider's stake on a local chain):
    /// ADDRESS=AMOUNT. Repeatable.
    #[arg(long = "mint", value_name = "ADDRESS=AMOUNT")]
    mint: Vec<String>,
}

/// `tollgate chain register-node`.
#[derive(clap::Args)]
pub struct RegisterArgs {
    /// JSON-RPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8545")]
    rpc_url: String,
    /// The deployment file.
    #[arg(long, default_value = "data/chain.json")]
    deployment: PathBuf,
    /// Environment variable with the provider's private key (hex): it pays
    /// the stake and is paid for the node's work.
    #[arg(long, default_value = "TOLLGATE_PROVIDER_KEY")]
    key_env: String,
    /// The node's signing address (`address` in its /node/info).
    #[arg(long)]
    signer: Address,
    /// The node's root URL, e.g. http://10.0.0.5:9100.
    #[arg(long)]
    endpoint: String,
    /// sha256 of the GGUF file it serves (`sha256` in its /node/info).
    #[arg(long)]
    model_hash: alloy::primitives::B256,
    /// Input price per 1M tokens, fee-token units.
    #[arg(long)]
    price_in: String,
    /// Output price per 1M tokens, fee-token units.
    #[arg(long)]
    price_out: String,
    /// Region label.
    #[arg(long, default_value = "unknown")]
    region: String,
    /// Stake, fee-token units.
    #[arg(long)]
    stake: String,
}

fn load(config_path: &Path) -> anyhow::Result<config::Loaded> {
    config::load(config_path).map_err(|errors| {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid configuration:\n  {}", text.join("\n  "))
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Runs `tollgate invoices ...`.
pub fn invoices(config_path: &Path, action: InvoicesAction) -> anyhow::Result<ExitCode> {
    let loaded = load(config_path)?;
    runtime()?.block_on(async {
        let ledger: Arc<dyn Ledger> = match loaded
            .config
            .shared
            .as_ref()
            .and_then(|s| s.postgres.as_deref())
        {
            Some(url) => Arc::new(PostgresLedger::connect(url).await?),
            None => Arc::new(SqliteLedger::open_existing(
                loaded.resolve(&loaded.config.ledger_path()),
            )?),
        };
        let ledger = ledger.as_ref();
        if let InvoicesAction::Export { csv } = action {
            anyhow::ensure!(csv, "export writes CSV only; pass --csv");
            print!("{}", audit::export_csv(ledger).await?);
            return Ok(ExitCode::SUCCESS);
        }
        let c = loaded.config.chain.as_ref().with_context(|| {
            format!(
                "{} has no chain section: nothing is settled on chain",
                config_path.display()
            )
        })?;
        let deployment = Deployment::load(&loaded.resolve(&c.deployment))?;
        let chain = Chain::connect(&c.rpc_url, None, deployment).await?;
        match action {
            InvoicesAction::List => print_json(&audit::list(&chain).await?)?,
            InvoicesAction::Show { batch } => print_json(&audit::show(&chain, &batch).await?)?,
            InvoicesAction::Verify {
                request_id,
                receipts,
            } => {
                print_json(&audit::verify(&chain, ledger, &request_id, receipts.as_deref()).await?)?
            }
            InvoicesAction::Reconcile => {
                let report = audit::reconcile(&chain, ledger).await?;
                print_json(&report)?;
                if !report.differences.is_empty() {
                    return Ok(ExitCode::FAILURE);
                }
            }
            InvoicesAction::Export { .. } => unreachable!("handled above"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Parses an amount of fee tokens ("25.5") into atto-units.
fn parse_amount(flag: &str, amount: &str) -> anyhow::Result<U256> {
    let amount: tollgate_policies::Price = serde_yaml::from_str(&format!("\"{amount}\""))
        .with_context(|| format!("{flag}: '{amount}' is not an amount of fee tokens"))?;
    Ok(U256::from(amount.0))
}

/// Parses "ADDRESS=AMOUNT" with AMOUNT in fee-token units.
fn parse_funding(flag: &str, text: &str) -> anyhow::Result<(Address, U256)> {
    let (address, amount) = text
        .split_once('=')
        .with_context(|| format!("{flag} '{text}' is not ADDRESS=AMOUNT"))?;
    let address: Address = address
        .parse()
        .with_context(|| format!("{flag}: '{address}' is not an address"))?;
    Ok((address, parse_amount(flag, amount)?))
}

/// Reads a hex private key from an environment variable.
fn key_from_env(var: &str, whose: &str) -> anyhow::Result<chain::PrivateKeySigner> {
    let key = std::env::var(var)
        .with_context(|| format!("the {whose}'s private key is read from ${var}"))?;
    Ok(chain::parse_key(&key)?)
}

/// Runs `tollgate chain ...`.
pub fn chain(action: ChainAction) -> anyhow::Result<ExitCode> {
    match action {
        ChainAction::Deploy(args) => deploy_contracts(args),
        ChainAction::RegisterNode(args) => register_node(args),
    }
}

fn register_node(args: RegisterArgs) -> anyhow::Result<ExitCode> {
    let registration = deploy::Registration {
        signer: args.signer,
        endpoint: args.endpoint,
        model_hash: args.model_hash,
        price_in_per_1m: parse_amount("--price-in", &args.price_in)?,
        price_out_per_1m: parse_amount("--price-out", &args.price_out)?,
        region: args.region,
        stake: parse_amount("--stake", &args.stake)?,
    };
    let deployment = Deployment::load(&args.deployment)?;
    let key = key_from_env(&args.key_env, "provider")?;
    let provider = chain::provider(&args.rpc_url, Some(key))?;
    runtime()?.block_on(deploy::register_node(&provider, &deployment, &registration))?;
    eprintln!(
        "registered node {} at {}",
        registration.signer, registration.endpoint
    );
    Ok(ExitCode::SUCCESS)
}

fn deploy_contracts(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let parse_all = |flag: &str, items: &[String]| {
        items
            .iter()
            .map(|f| parse_funding(flag, f))
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let funding = parse_all("--fund", &args.fund)?;
    let minting = parse_all("--mint", &args.mint)?;
    let key = key_from_env(&args.key_env, "deployer")?;
    let admin = key.address();
    let provider = chain::provider(&args.rpc_url, Some(key))?;
    runtime()?.block_on(async {
        let opts = DeployOptions {
            artifacts: args.artifacts,
            settler: args.settler.unwrap_or(admin),
            treasury: args.treasury.unwrap_or(admin),
            protocol_fee_bps: args.protocol_fee_bps,
            withdrawal_delay_s: 24 * 3600,
            unbonding_delay_s: 7 * 24 * 3600,
        };
        let deployment = deploy::deploy(&provider, admin, &opts).await?;
        for (to, amount) in minting {
            deploy::mint(&provider, &deployment, to, amount).await?;
            eprintln!("minted {amount} atto-units of fee token to {to}");
        }
        for (payer, amount) in funding {
            deploy::fund_escrow(&provider, &deployment, admin, payer, amount).await?;
            eprintln!("deposited {amount} atto-units of escrow for {payer}");
        }
        let out = &args.out;
        deployment
            .save(out)
            .with_context(|| format!("writing {}", out.display()))?;
        print_json(&deployment)?;
        eprintln!("deployment written to {}", out.display());
        Ok(ExitCode::SUCCESS)
    })
}
