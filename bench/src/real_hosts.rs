//! What the bench parts on real MySQL hosts (`database`, `backups`) share: the secrets the
//! scripts read, running a script of `scripts/ssm/` as the agent would, a database node
//! installed by `db-install.sh`, and polling. Each part names itself in its errors.

use std::time::{Duration, Instant};

use local_cloud::hosts::{Host, Network};

use crate::{BenchError, Result};

/// The secrets' names, as the scripts get them (`ADMIN_SECRET_ID`, `APP_SECRET_ID`).
const ADMIN_SECRET: &str = "ha/bench/admin";
const APP_SECRET: &str = "ha/bench/app";
/// How often a state is polled while a time is measured (the resolution of the numbers).
const POLL: Duration = Duration::from_millis(100);

/// One bench part's hosts: its name (the prefix of its errors) and the two passwords its
/// nodes get.
pub struct RealHosts {
    pub part: &'static str,
    pub admin_password: &'static str,
    pub app_password: &'static str,
}

/// Bytes as text, lossily (script output).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl RealHosts {
    /// This part's error for `what`.
    pub fn failed(&self, what: impl std::fmt::Display) -> BenchError {
        BenchError::Run(format!("{}: {what}", self.part))
    }

    /// Run a script of `scripts/ssm/` on `host` as the agent would; its stdout, or why it
    /// failed.
    pub fn script(&self, host: &Host, name: &str, args: &[&str]) -> Result<String> {
        let env = [
            ("ADMIN_SECRET_ID", ADMIN_SECRET),
            ("APP_SECRET_ID", APP_SECRET),
        ];
        let output = host
            .run_script(name, args, &env)
            .map_err(|e| self.failed(e))?;
        let stdout = text(&output.stdout);
        if !output.status.success() {
            return Err(self.failed(format!(
                "{name} {args:?} on {} failed ({}):\n{stdout}\n{}",
                host.name,
                output.status,
                text(&output.stderr)
            )));
        }
        Ok(stdout)
    }

    /// A fresh host with both secrets, installed by `db-install.sh`.
    pub fn db_node(&self, network: &Network, name: &str, octet: u8) -> Result<Host> {
        let host = network.host(name, octet).map_err(|e| self.failed(e))?;
        host.put_secret(ADMIN_SECRET, self.admin_password)
            .map_err(|e| self.failed(e))?;
        host.put_secret(APP_SECRET, self.app_password)
            .map_err(|e| self.failed(e))?;
        self.script(&host, "db-install.sh", &[])?;
        Ok(host)
    }

    /// Poll `probe` every [`POLL`] until it gives a value; an error after `timeout`.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = probe() {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                return Err(self.failed(format!("timed out after {timeout:?} waiting for {what}")));
            }
            std::thread::sleep(POLL);
        }
    }
}
