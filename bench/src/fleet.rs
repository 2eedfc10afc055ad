//! The servers `make bench-verify` starts: real processes, killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

/// A child process killed when dropped.
pub struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a server binary and waits for its "listening on ADDR" line.
pub fn spawn(bin: &Path, args: &[&str], log: &Path) -> anyhow::Result<(Proc, String)> {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| bin.display().to_string())?;
    let stdout = child.stdout.take().context("no stdout")?;
    let proc = Proc(child);
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(line) => {
                if let Some(addr) = line?.strip_prefix("listening on ") {
                    let addr = format!("http://{}", addr.trim());
                    // Keep draining stdout so the child never blocks on it.
                    std::thread::spawn(move || lines.for_each(drop));
                    return Ok((proc, addr));
                }
            }
            None => bail!(
                "{} exited before listening (log: {})",
                bin.display(),
                log.display()
            ),
        }
    }
}
