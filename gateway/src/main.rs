//! `tollgate`: the gateway binary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tollgate_gateway::app::now_ms;
use tollgate_gateway::keys::KeyStore;
use tollgate_gateway::{config, finance};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "OpenAI-compatible gateway for decentralized GPU inference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI API and the admin API.
    Serve {
        /// The config file.
        #[arg(long, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Validate a config file and its policies; print every problem with file and line.
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
    /// Manage API keys.
    Keys {
        /// The config file (locates the key store and the accounts).
        #[arg(long, default_value = "config.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Finance: on-chain invoices, receipt proofs, reconciliation, export.
    Invoices {
        /// The config file (locates the ledger and the chain).
        #[arg(long, default_value = "config.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: finance::InvoicesAction,
    },
    /// Check an audit's evidence bundle: print its sha256 (the hash a slash
    /// names) and check that the node signed every answer it judges.
    Evidence {
        /// The bundle (`data/evidence/<sha256>.json`).
        file: PathBuf,
    },
    /// Deploy the settlement contracts.
    Chain {
        #[command(subcommand)]
        action: finance::ChainAction,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a key for an account; the key is printed once.
    Add {
        /// The account it bills.
        #[arg(long)]
        account: String,
        /// A label.
        #[arg(long, default_value = "")]
        name: String,
        /// Use this key instead of generating one (at least 16 characters).
        #[arg(long)]
        key: Option<String>,
        /// Succeed quietly if this exact key is already stored.
        #[arg(long)]
        if_missing: bool,
    },
    /// List keys (never the keys themselves).
    List,
    /// Revoke a key by id; takes effect without a restart.
    Revoke {
        /// The key id (from `keys list`).
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(&config).map(|()| ExitCode::SUCCESS),
        Command::CheckConfig { file } => return check_config(&file),
        Command::Keys { config, action } => keys(&config, action).map(|()| ExitCode::SUCCESS),
        Command::Invoices { config, action } => finance::invoices(&config, action),
        Command::Chain { action } => finance::chain(action),
        Command::Evidence { file } => check_evidence(&file).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_evidence(file: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let evidence: tollgate_verify::Evidence =
        serde_json::from_slice(&bytes).context("not an evidence bundle")?;
    let answers = evidence.check_signed()?;
    let report = serde_json::json!({
        "evidence_hash": tollgate_verify::Evidence::hash_hex(&bytes),
        "node": evidence.node,
        "signer": evidence.signer,
        "verdict": evidence.verdict.outcome,
        "signed_answers_checked": answers,
    });
    println!("{report}");
    Ok(())
}

fn serve(config_path: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let level = config::load(config_path)
            .ok()
            .and_then(|l| l.config.log_level)
            .unwrap_or_else(|| "info".into());
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
            )
            .with_writer(std::io::stderr)
            .init();
        let app = tollgate_gateway::start(config_path).await?;
        let listen = app.state.load().loaded.config.listen.clone();
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        // Scripts and tests wait for this exact line.
        println!("listening on {addr}");
        tracing::info!("tollgate serving on http://{addr}/v1");
        let router = tollgate_gateway::server::router(app);
        // Streams write many small chunks: without TCP_NODELAY, Nagle holds each
        // behind the client's delayed ACK (~40 ms per chunk).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    })
}

fn check_config(file: &Path) -> ExitCode {
    match config::load(file) {
        Ok(loaded) => {
            println!(
                "{}: OK ({} nodes, {} accounts, {} policies from {} file(s))",
                file.display(),
                loaded.config.nodes.len(),
                loaded.config.accounts.len(),
                loaded.policies.policies.len(),
                loaded.files.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                println!("{e}");
            }
            eprintln!("{} problem(s) found", errors.len());
            ExitCode::FAILURE
        }
    }
}

fn keys(config_path: &Path, action: KeysAction) -> anyhow::Result<()> {
    let loaded = config::load(config_path).map_err(|errors| {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid configuration:\n  {}", text.join("\n  "))
    })?;
    let path = loaded.resolve(&loaded.config.keys_path());
    let mut store = KeyStore::read(&path)?;
    match action {
        KeysAction::Add {
            account,
            name,
            key,
            if_missing,
        } => {
            if !loaded.config.accounts.iter().any(|a| a.id == account) {
                anyhow::bail!(
                    "account '{account}' is not defined in {}",
                    config_path.display()
                );
            }
            if if_missing {
                if let Some(k) = &key {
                    let hash = tollgate_gateway::keys::hash_key(k);
                    if let Some(existing) = store
                        .keys
                        .iter()
                        .find(|r| r.sha256 == hash && r.revoked_at_ms.is_none())
                    {
                        println!(
                            "key already present: {} (account {})",
                            existing.id, existing.account
                        );
                        return Ok(());
                    }
                }
            }
            let (record, key) = store.add(&account, &name, key, now_ms())?;
            store.write(&path)?;
            println!("{key}");
            eprintln!("created {} for account {} (stored hashed in {}; this is the only time it is shown)", record.id, record.account, path.display());
        }
        KeysAction::List => {
            println!(
                "{:<18} {:<16} {:<16} {:<12} status",
                "id", "account", "name", "prefix"
            );
            for k in &store.keys {
                let status = if k.revoked_at_ms.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{:<18} {:<16} {:<16} {:<12} {status}",
                    k.id, k.account, k.name, k.prefix
                );
            }
        }
        KeysAction::Revoke { id } => {
            store.revoke(&id, now_ms())?;
            store.write(&path)?;
            println!("revoked {id}");
        }
    }
    Ok(())
}
