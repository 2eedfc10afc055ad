//! An append-only JSON-lines receipt file with group commit.
//!
//! One writer thread owns the file. Callers queue a receipt and wait; the writer
//! drains everything queued, writes it, calls `fdatasync` once and then answers
//! every caller in that batch. Under load many receipts share one sync, so
//! throughput does not collapse to the disk's sync rate.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use tokio::sync::{mpsc, oneshot};

use crate::{BoxFuture, LedgerError, Receipt, ReceiptSink};

type Ack = oneshot::Sender<Result<(), LedgerError>>;

/// Receipts appended to a JSONL file, each durable before `record` resolves.
pub struct JsonlSink {
    path: PathBuf,
    queue: mpsc::UnboundedSender<(Vec<u8>, Ack)>,
}

impl JsonlSink {
    /// Opens (creating if needed) the file and starts its writer thread.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, LedgerError> {
        let path = path.into();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let (queue, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("receipts-writer".into())
            .spawn(move || write_loop(file, rx))?;
        Ok(Self { path, queue })
    }

    /// The file this sink appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Total billed per account over every receipt in the file, so budgets
    /// survive a restart. A torn last line (crash mid-write) is skipped.
    pub fn spend_by_account(path: &Path) -> Result<HashMap<String, u128>, LedgerError> {
        let mut totals = HashMap::new();
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(totals),
            Err(e) => return Err(e.into()),
        };
        for line in BufReader::new(file).lines() {
            let line = line?;
            if let Ok(r) = serde_json::from_str::<Receipt>(&line) {
                *totals.entry(r.account).or_insert(0u128) += r.amount;
            }
        }
        Ok(totals)
    }
}

impl ReceiptSink for JsonlSink {
    fn record(&self, receipt: Receipt) -> BoxFuture<'_, Result<(), LedgerError>> {
        Box::pin(async move {
            let mut line = serde_json::to_vec(&receipt)?;
            line.push(b'\n');
            let (ack, done) = oneshot::channel();
            self.queue
                .send((line, ack))
                .map_err(|_| LedgerError::Closed)?;
            done.await.map_err(|_| LedgerError::Closed)?
        })
    }
}

fn write_loop(mut file: File, mut rx: mpsc::UnboundedReceiver<(Vec<u8>, Ack)>) {
    let mut batch: Vec<Ack> = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    while let Some((line, ack)) = rx.blocking_recv() {
        buf.extend_from_slice(&line);
        batch.push(ack);
        while let Ok((line, ack)) = rx.try_recv() {
            buf.extend_from_slice(&line);
            batch.push(ack);
        }
        let result = file.write_all(&buf).and_then(|()| file.sync_data());
        buf.clear();
        for ack in batch.drain(..) {
            let answer = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(LedgerError::Io(std::io::Error::new(
                    e.kind(),
                    e.to_string(),
                ))),
            };
            // A caller that stopped waiting no longer needs its answer.
            let _ = ack.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Outcome, UsageSource};

    fn receipt(id: &str, account: &str, amount: u128) -> Receipt {
        Receipt {
            request_id: id.into(),
            account: account.into(),
            node: "n".into(),
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_all_land_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r/receipts.jsonl");
        let sink = std::sync::Arc::new(JsonlSink::open(&path).unwrap());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let sink = sink.clone();
            tasks.push(tokio::spawn(async move {
                sink.record(receipt(
                    &format!("req-{i}"),
                    if i % 2 == 0 { "a" } else { "b" },
                    3,
                ))
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: std::collections::HashSet<_> = text
            .lines()
            .map(|l| serde_json::from_str::<Receipt>(l).unwrap().request_id)
            .collect();
        assert_eq!(text.lines().count(), 200);
        assert_eq!(ids.len(), 200);
        let totals = JsonlSink::spend_by_account(&path).unwrap();
        assert_eq!(totals["a"], 300);
        assert_eq!(totals["b"], 300);
    }

    #[test]
    fn spend_skips_a_torn_last_line_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.jsonl");
        assert!(JsonlSink::spend_by_account(&path).unwrap().is_empty());
        let mut text = serde_json::to_string(&receipt("r1", "a", 7)).unwrap();
        text.push('\n');
        text.push_str("{\"request_id\":\"r2\",\"acc");
        std::fs::write(&path, text).unwrap();
        assert_eq!(JsonlSink::spend_by_account(&path).unwrap()["a"], 7);
    }
}
