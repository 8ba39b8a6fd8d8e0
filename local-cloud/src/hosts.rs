//! Real hosts of the local cloud: a thin Rust face of `local-cloud/hosts/ha-host` (network
//! namespace + overlay of the MySQL 9.7 rootfs + chroot per host; see that script's header).
//! A [`Network`] is a bridge its hosts share; a [`Host`] is one instance, with its own
//! address, DNS name, mysqld and files. Both are removed when dropped, so a failing test
//! leaks neither processes nor mounts.
//!
//! The scripts of `scripts/ssm/` run in a host the way the SSM agent runs them on an
//! instance ([`Host::run_script`]): copied beside `db-lib.sh` into the host, run by bash as
//! root, the secret ids in the environment.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::{HarnessError, Result, io, project_root};

/// Where scripts are put inside a host (the agent's orchestration folder plays this role).
const SCRIPTS_INSIDE: &str = "/var/lib/ha-scripts";

fn ha_host() -> PathBuf {
    project_root().join("local-cloud/hosts/ha-host")
}

fn run_ha_host(args: &[&str]) -> Result<Output> {
    let output = Command::new(ha_host())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io(format!("running ha-host {}", args.join(" "))))?;
    if !output.status.success() {
        return Err(HarnessError::Io {
            context: format!("ha-host {}", args.join(" ")),
            source: std::io::Error::other(String::from_utf8_lossy(&output.stderr).into_owned()),
        });
    }
    Ok(output)
}

/// Checks what real hosts need, with what to change when it is missing: root (namespaces,
/// mounts, chroot) and the rootfs `scripts/setup.sh` installs.
pub fn require_host_support() -> Result<()> {
    // The effective user, from /proc/self/status (no libc call needed).
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(io("reading /proc/self/status"))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Err(HarnessError::ToolMissing {
            tool: "root",
            path: PathBuf::from("/"),
            fix: "the real-MySQL hosts need root (network namespaces, overlay mounts, chroot): run the tests as root",
        });
    }
    let rootfs = rootfs_dir();
    if !rootfs.join("usr/sbin/mysqld").exists() {
        return Err(HarnessError::ToolMissing {
            tool: "MySQL 9.7 rootfs",
            path: rootfs,
            fix: "run scripts/setup.sh (make setup)",
        });
    }
    Ok(())
}

fn rootfs_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HA_MYSQL_ROOTFS") {
        return PathBuf::from(dir);
    }
    let tools = std::env::var_os("HA_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/ha-orchestrator/tools")
        });
    tools.join("mysql-9.7-rootfs")
}

/// Where `ha-host` keeps its hosts and networks (and this module its address-space locks).
fn hosts_dir() -> PathBuf {
    std::env::var_os("HA_HOSTS_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/ha-hosts"))
}

/// The /16 blocks [`AddressSpace::reserve`] hands out: `10.100.0.0/16` to `10.199.0.0/16`,
/// clear of the template's default VPC (`10.40.0.0/16`, which `make run` uses).
const RESERVABLE_SECOND_OCTETS: std::ops::RangeInclusive<u8> = 100..=199;

/// A CIDR block that one network of real hosts holds on this machine while it lives.
///
/// Every network's bridge gets its gateway address (base + 1) in the machine's own namespace
/// (see `ha-host gateway`), and a route to the whole block: two networks on one block at once
/// would steal each other's replies. Tests run side by side (each test its own process), so
/// each network holds an exclusive `flock` on `<HA_HOSTS_DIR>/spaces/<cidr>.lock`; the kernel
/// releases it when the process ends, however it ends, so a killed test frees its block.
#[derive(Debug)]
pub struct AddressSpace {
    cidr: String,
    _lock: std::fs::File,
}

impl AddressSpace {
    /// The first free block of `10.100.0.0/16` .. `10.199.0.0/16`.
    pub fn reserve() -> Result<Self> {
        for second in RESERVABLE_SECOND_OCTETS {
            if let Some(space) = Self::try_claim(&format!("10.{second}.0.0/16"))? {
                return Ok(space);
            }
        }
        Err(HarnessError::Io {
            context: "reserving an address block for real hosts".into(),
            source: std::io::Error::other(format!(
                "all of 10.{}.0.0/16 to 10.{}.0.0/16 are held by other networks of this machine                  (locks under {}): end the runs that hold them or run fewer tests at once",
                RESERVABLE_SECOND_OCTETS.start(),
                RESERVABLE_SECOND_OCTETS.end(),
                hosts_dir().join("spaces").display()
            )),
        })
    }

    /// Exactly `cidr` (e.g. the stack's `VpcCidr`); an error when another network of this
    /// machine holds it.
    pub fn claim(cidr: &str) -> Result<Self> {
        Self::try_claim(cidr)?.ok_or_else(|| HarnessError::Io {
            context: format!("claiming {cidr} for real hosts"),
            source: std::io::Error::other(format!(
                "another network of this machine uses {cidr} (lock {}): stop that run, or \
                 deploy with another VpcCidr",
                Self::lock_path(cidr).display()
            )),
        })
    }

    fn lock_path(cidr: &str) -> PathBuf {
        hosts_dir()
            .join("spaces")
            .join(format!("{}.lock", cidr.replace('/', "_")))
    }

    fn try_claim(cidr: &str) -> Result<Option<Self>> {
        let path = Self::lock_path(cidr);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self {
                cidr: cidr.to_string(),
                _lock: file,
            })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(HarnessError::Io {
                context: format!("locking {}", path.display()),
                source: e,
            }),
        }
    }

    /// The block, `a.b.c.d/n`.
    pub fn cidr(&self) -> &str {
        &self.cidr
    }
}

/// `<pid> <start time>` of a live process (field 22 of `/proc/<pid>/stat`, in clock ticks
/// since boot): a pid the kernel reused for another process does not match it.
fn process_identity(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = stat.rsplit_once(')')?.1;
    let start_time = after_name.split_whitespace().nth(19)?;
    Some(format!("{pid} {start_time}"))
}

/// Take down every network whose owner (the process that brought it up, recorded in its
/// `owner` file) has ended. A test that is killed (the runner's timeout, a Ctrl-C) runs no
/// `Drop`, and its hosts' servers would keep running and holding memory for the rest of the
/// run and beyond; the next network that comes up on the machine removes them.
fn reap_orphaned_networks() {
    let Ok(networks) = std::fs::read_dir(hosts_dir().join("net")) else {
        return;
    };
    for network in networks.flatten() {
        let Ok(owner) = std::fs::read_to_string(network.path().join("owner")) else {
            continue; // brought up by hand (`ha-host network-up`) or still coming up
        };
        let alive = owner
            .split_whitespace()
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
            .and_then(process_identity)
            .is_some_and(|now| now == owner.trim());
        if !alive && let Some(name) = network.file_name().to_str() {
            eprintln!("[hosts] network {name} outlived its owner ({owner}): taking it down");
            let _ = run_ha_host(&["network-down", name]);
        }
    }
}

/// A bridge shared by its hosts; `a.b.0.0/16`, hosts get `a.b.0.N`.
#[derive(Debug)]
pub struct Network {
    name: String,
    prefix: String,
    /// Held while the network is up (declared after `name` so it is released only after
    /// `Drop` took the bridge down).
    _space: AddressSpace,
    /// The S3 configuration written into every host (see [`Network::serve_s3`]), kept
    /// to write it into hosts created later too.
    s3: std::sync::Mutex<Option<S3Access>>,
}

/// Where the hosts' `aws s3` stand-in reaches the local cloud's S3, and as whom.
#[derive(Debug, Clone)]
pub struct S3Access {
    /// The endpoint as seen from inside a host (`http://<gateway>:<port>`).
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// Where the `aws` stand-in reads the S3 configuration inside a host (see its header).
const S3_STATE_INSIDE: &str = "/var/lib/ha-standin/s3";

/// A TCP relay from the network's gateway address to a port of this machine's loopback
/// (fakecloud listens on 127.0.0.1 only). Stops accepting when dropped.
#[derive(Debug)]
pub struct Relay {
    listen: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    /// Listen on `listen_ip` (a free port) and forward every connection to `target`.
    pub fn start(listen_ip: &str, target: std::net::SocketAddr) -> Result<Self> {
        let listener = std::net::TcpListener::bind((listen_ip, 0))
            .map_err(io(format!("binding a relay on {listen_ip}")))?;
        let listen = listener.local_addr().map_err(io("relay address"))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(inbound) = inbound else { continue };
                let Ok(outbound) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                let (Ok(in2), Ok(out2)) = (inbound.try_clone(), outbound.try_clone()) else {
                    continue;
                };
                std::thread::spawn(move || pipe(inbound, outbound));
                std::thread::spawn(move || pipe(out2, in2));
            }
        });
        Ok(Self { listen, stop })
    }

    /// The address the relay listens on.
    pub fn address(&self) -> std::net::SocketAddr {
        self.listen
    }
}

/// Copy one direction of a relayed connection; at its end, close the other side's write
/// half so the peer sees the end of the stream too.
fn pipe(mut from: std::net::TcpStream, mut to: std::net::TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(self.listen);
    }
}

impl Network {
    /// Bring up network `name` (unique on the machine) on a /16 block no other network of
    /// the machine holds ([`AddressSpace::reserve`]). A network of the same name left by a
    /// killed run is removed first.
    pub fn up(name: &str) -> Result<Self> {
        require_host_support()?;
        Self::in_space(name, AddressSpace::reserve()?)
    }

    /// Bring up network `name` on `space` (e.g. the stack's VPC CIDR, so the instances keep
    /// the private addresses EC2 gave them).
    pub fn in_space(name: &str, space: AddressSpace) -> Result<Self> {
        require_host_support()?;
        reap_orphaned_networks();
        let cidr = space.cidr().to_string();
        let _ = run_ha_host(&["network-down", name]);
        run_ha_host(&["network-up", name, &cidr])?;
        let owner = hosts_dir().join("net").join(name).join("owner");
        std::fs::write(
            &owner,
            process_identity(std::process::id()).unwrap_or_default(),
        )
        .map_err(io(format!("writing {}", owner.display())))?;
        let prefix = cidr.split('/').next().unwrap_or_default();
        Ok(Self {
            name: name.to_string(),
            _space: space,
            s3: std::sync::Mutex::new(None),
            prefix: prefix
                .rsplit_once('.')
                .map(|(head, _)| head)
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// Let the hosts reach the local cloud's S3: the bridge gets the network's gateway
    /// address (`ha-host gateway`: base + 1, the VPC router's, never a host's), a [`Relay`]
    /// listens there and forwards to `local_endpoint` (fakecloud's `http://127.0.0.1:PORT`),
    /// and every host, now and later, gets the endpoint, region and credentials under
    /// `/var/lib/ha-standin/s3/` with the `ha-s3` binary the `aws s3 cp` stand-in runs.
    /// Keep the returned relay as long as the hosts use S3.
    pub fn serve_s3(
        &self,
        local_endpoint: &str,
        region: &str,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Result<Relay> {
        let gateway = String::from_utf8_lossy(&run_ha_host(&["gateway", &self.name])?.stdout)
            .trim()
            .to_string();
        let target: std::net::SocketAddr = local_endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .map_err(|e| HarnessError::Io {
                context: format!("S3 endpoint {local_endpoint}"),
                source: std::io::Error::other(format!("{e}: expected http://IP:PORT")),
            })?;
        let relay = Relay::start(&gateway, target)?;
        let access = S3Access {
            endpoint: format!("http://{gateway}:{}", relay.address().port()),
            region: region.to_string(),
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
        };
        let hosts = String::from_utf8_lossy(&run_ha_host(&["list", &self.name])?.stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>();
        for name in hosts {
            let root = PathBuf::from(
                String::from_utf8_lossy(&run_ha_host(&["root", &name])?.stdout).trim(),
            );
            write_s3_access(&root, &access)?;
        }
        *self.s3.lock().unwrap_or_else(|e| e.into_inner()) = Some(access);
        Ok(relay)
    }

    /// The `n`-th host address of the network (from 1): `a.b.0.10`, `a.b.0.11`, ... then the
    /// next /24 after 240 hosts (the network's block is a /16).
    pub fn address(&self, n: u32) -> String {
        let base = self
            .prefix
            .rsplit_once('.')
            .map(|(ab, _)| ab)
            .unwrap_or(&self.prefix);
        format!("{base}.{}.{}", n / 240, n % 240 + 10)
    }

    /// A new host `name` with the address `<prefix>.<last_octet>` and the DNS name EC2
    /// would give it (`ip-a-b-c-d.ec2.internal`).
    pub fn host(&self, name: &str, last_octet: u8) -> Result<Host> {
        let address = format!("{}.{last_octet}", self.prefix);
        let dns_name = format!("ip-{}.ec2.internal", address.replace('.', "-"));
        self.host_at(name, &address, &dns_name, &format!("i-{name}"))
    }

    /// A new host `name` with exactly this address, DNS name and instance id (what IMDS
    /// answers inside).
    pub fn host_at(
        &self,
        name: &str,
        address: &str,
        dns_name: &str,
        instance_id: &str,
    ) -> Result<Host> {
        let _ = run_ha_host(&["destroy", name]);
        run_ha_host(&["create", &self.name, name, address, dns_name, instance_id])?;
        let root =
            PathBuf::from(String::from_utf8_lossy(&run_ha_host(&["root", name])?.stdout).trim());
        if let Some(access) = self.s3.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            write_s3_access(&root, access)?;
        }
        Ok(Host {
            name: name.to_string(),
            address: address.to_string(),
            dns_name: dns_name.to_string(),
            root,
        })
    }
}

/// Write the S3 endpoint, region and credentials, one file each, and the `ha-s3` binary
/// into the host whose `/` is `root` (read by `local-cloud/standins/aws`).
fn write_s3_access(root: &Path, access: &S3Access) -> Result<()> {
    let dir = root.join(S3_STATE_INSIDE.trim_start_matches('/'));
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    for (file, value) in [
        ("endpoint", &access.endpoint),
        ("region", &access.region),
        ("access-key-id", &access.access_key_id),
        ("secret-access-key", &access.secret_access_key),
    ] {
        std::fs::write(dir.join(file), value)
            .map_err(io(format!("writing {file} in {}", dir.display())))?;
    }
    // The SDK's HTTPS client needs trust roots even for a plain-HTTP endpoint; the rootfs
    // has no CA bundle, so the machine's goes in (the stand-in points SSL_CERT_FILE at it).
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    std::fs::copy(bundle, dir.join("ca-bundle.pem")).map_err(io(format!(
        "copying {} into a host (install ca-certificates)",
        bundle.display()
    )))?;
    let binary = crate::built_binary("ha-s3");
    std::fs::copy(&binary, dir.join("ha-s3")).map_err(io(format!(
        "copying {} into a host (built by `cargo build --workspace`)",
        binary.display()
    )))?;
    Ok(())
}

/// `HA_KEEP_HOSTS=1` keeps hosts and networks after a test, to read their logs (remove
/// them with `ha-host network-down NET`).
fn keep_hosts() -> bool {
    std::env::var_os("HA_KEEP_HOSTS").is_some_and(|v| v == "1")
}

impl Drop for Network {
    fn drop(&mut self) {
        if keep_hosts() {
            // Kept on purpose: no longer owned, so no reaper takes it down.
            let _ = std::fs::remove_file(hosts_dir().join("net").join(&self.name).join("owner"));
            return;
        }
        let _ = run_ha_host(&["network-down", &self.name]);
    }
}

/// One instance: its own network namespace, files and processes.
#[derive(Debug)]
pub struct Host {
    pub name: String,
    pub address: String,
    pub dns_name: String,
    root: PathBuf,
}

impl Host {
    /// The host's `/` as seen from outside (to read its files).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every file the host wrote (its overlay's upper layer: configs, logs, binary logs,
    /// the scripts the agent ran), as (path inside the host, content), files over
    /// `max_bytes` left out; to prove what must never be written (a password) is not.
    pub fn written_files(&self, max_bytes: u64) -> Vec<(String, Vec<u8>)> {
        let upper = self.root.with_file_name("upper");
        let mut found = Vec::new();
        let mut pending = vec![upper.clone()];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.is_dir() {
                    pending.push(path);
                } else if meta.is_file()
                    && meta.len() <= max_bytes
                    && let Ok(content) = std::fs::read(&path)
                {
                    let inside = Path::new("/").join(path.strip_prefix(&upper).unwrap_or(&path));
                    found.push((inside.display().to_string(), content));
                }
            }
        }
        found
    }

    /// Write `content` to `path` inside the host (e.g. a secret the stand-in `aws` answers).
    pub fn put_file(&self, path: &str, content: &str) -> Result<()> {
        let target = self.root.join(path.trim_start_matches('/'));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        std::fs::write(&target, content).map_err(io(format!("writing {}", target.display())))
    }

    /// A secret the instance role may read, for the `aws` stand-in.
    pub fn put_secret(&self, secret_id: &str, value: &str) -> Result<()> {
        self.put_file(&format!("/var/lib/ha-standin/secrets/{secret_id}"), value)
    }

    /// Run `command` inside the host with `env`, `stdin` on its standard input.
    pub fn exec(
        &self,
        env: &[(&str, &str)],
        command: &[&str],
        stdin: Option<&str>,
    ) -> Result<Output> {
        let mut cmd = Command::new(ha_host());
        cmd.arg("exec").arg(&self.name);
        for (key, value) in env {
            cmd.arg(format!("{key}={value}"));
        }
        cmd.arg("--").args(command);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(io(format!("running {command:?} in {}", self.name)))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            pipe.write_all(input.as_bytes())
                .map_err(io(format!("writing stdin of {command:?} in {}", self.name)))?;
        }
        child
            .wait_with_output()
            .map_err(io(format!("waiting for {command:?} in {}", self.name)))
    }

    /// Start `command` inside the host without waiting for it (its output discarded).
    pub fn spawn(&self, command: &[&str]) -> Result<std::process::Child> {
        Command::new(ha_host())
            .arg("exec")
            .arg(&self.name)
            .arg("--")
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io(format!("starting {command:?} in {}", self.name)))
    }

    /// Run a script of `scripts/ssm/` as the SSM agent would: bash, as root, `db-lib.sh`
    /// beside it, `env` (the secret ids) in the environment.
    pub fn run_script(&self, script: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
        // HA_SSM_SCRIPTS runs another version of the scripts (e.g. an older commit's, to
        // see a test fail without a fix).
        let source = std::env::var_os("HA_SSM_SCRIPTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| project_root().join("scripts/ssm"));
        let inside = self.root.join(SCRIPTS_INSIDE.trim_start_matches('/'));
        std::fs::create_dir_all(&inside).map_err(io(format!("creating {}", inside.display())))?;
        for file in [script, "db-lib.sh"] {
            std::fs::copy(source.join(file), inside.join(file))
                .map_err(io(format!("copying {file} into {}", self.name)))?;
        }
        let path = format!("{SCRIPTS_INSIDE}/{script}");
        let mut command = vec!["bash", path.as_str()];
        command.extend_from_slice(args);
        self.exec(env, &command, None)
    }

    /// SQL as root over the socket (auth_socket, as `db-install.sh` leaves root); the rows
    /// tab-separated, no column names.
    pub fn sql(&self, statement: &str) -> Result<String> {
        let output = self.exec(
            &[],
            &[
                "mysql",
                "--user=root",
                "--batch",
                "--skip-column-names",
                "-e",
                statement,
            ],
            None,
        )?;
        if !output.status.success() {
            return Err(HarnessError::Io {
                context: format!("SQL on {}: {statement}", self.name),
                source: std::io::Error::other(String::from_utf8_lossy(&output.stderr).into_owned()),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string())
    }

    /// The instance is lost: every process of the host is killed at once (mysqld too).
    pub fn kill(&self) -> Result<()> {
        run_ha_host(&["kill", &self.name]).map(drop)
    }

    /// Partition the host from its network (`false`) or connect it again (`true`).
    pub fn link(&self, up: bool) -> Result<()> {
        run_ha_host(&["link", &self.name, if up { "up" } else { "down" }]).map(drop)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if keep_hosts() {
            return;
        }
        let _ = run_ha_host(&["destroy", &self.name]);
    }
}
