//! `TestRedis`: a standalone server, a cluster or a sentinel set for one test, with faults.

use std::{
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use redtail_core::Namespace;

use crate::{
    Error, Result,
    resp::Reply,
    server::{Process, nanos, wait_until},
};

/// The name sentinels monitor the primary under.
pub const SENTINEL_SERVICE: &str = "redtail";

/// The kinds of deployment a suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Deployment {
    /// One `redis-server`.
    Standalone,
    /// Six nodes: three primaries with one replica each.
    Cluster,
    /// A primary, a replica and three sentinels.
    Sentinel,
}

impl Deployment {
    /// The variable that names an existing deployment of this kind.
    pub fn env(self) -> &'static str {
        match self {
            Deployment::Standalone => "REDIS_URL",
            Deployment::Cluster => "REDIS_CLUSTER_URL",
            Deployment::Sentinel => "REDIS_SENTINEL_URL",
        }
    }
}

/// Test Redis servers, stopped (by pid, with SIGKILL) and their folder removed on drop.
///
/// ```no_run
/// use redtail_testkit::TestRedis;
///
/// let redis = TestRedis::standalone()?;      // REDIS_URL, else a fresh redis-server
/// let url = redis.url();                      // give this to the client under test
/// let prefix = redis.namespace();             // keys of this test only
/// # Ok::<(), redtail_testkit::Error>(())
/// ```
#[derive(Debug)]
pub struct TestRedis {
    deployment: Deployment,
    url: String,
    servers: Vec<Process>,
    sentinels: Vec<Process>,
    root: Option<PathBuf>,
    // A container from the testcontainers fallback, stopped on drop.
    container: Option<Box<dyn std::any::Any + Send>>,
}

impl TestRedis {
    /// A standalone server: `REDIS_URL` when set, else a new `redis-server`.
    pub fn standalone() -> Result<TestRedis> {
        Self::shared_or_owned(Deployment::Standalone)
    }

    /// A cluster: `REDIS_CLUSTER_URL` when set, else six new nodes.
    pub fn cluster() -> Result<TestRedis> {
        Self::shared_or_owned(Deployment::Cluster)
    }

    /// A sentinel set: `REDIS_SENTINEL_URL` when set, else a primary, a replica and three sentinels.
    pub fn sentinel() -> Result<TestRedis> {
        Self::shared_or_owned(Deployment::Sentinel)
    }

    /// A deployment of `kind`, from its environment variable when set, else started.
    pub fn shared_or_owned(kind: Deployment) -> Result<TestRedis> {
        match std::env::var(kind.env()) {
            Ok(url) if !url.is_empty() => Ok(TestRedis::empty(kind, url, None)),
            _ => Self::owned(kind),
        }
    }

    /// A deployment of `kind` started for this caller alone, ignoring the environment, so that
    /// faults can be injected.
    pub fn owned(kind: Deployment) -> Result<TestRedis> {
        Self::start(kind, false, false)
    }

    /// A standalone server of its own with append-only persistence, so a restart keeps its data.
    pub fn standalone_persistent() -> Result<TestRedis> {
        Self::start(Deployment::Standalone, true, false)
    }

    /// A standalone server of its own in a process group of its own: a Ctrl-C at the terminal
    /// reaches the program using it but not the server, which stops when this value is dropped.
    /// For demos that must stop their clients before their server.
    pub fn standalone_detached() -> Result<TestRedis> {
        Self::start(Deployment::Standalone, false, true)
    }

    /// A standalone server of its own serving TLS with the PEM files `cert` and `key` (its
    /// certificate and private key); [`TestRedis::url`] is the `rediss://127.0.0.1:<port>` URL.
    /// Clients need not present a certificate. The harness itself talks to the server on a
    /// plain port that only it uses.
    pub fn standalone_tls(cert: &std::path::Path, key: &std::path::Path) -> Result<TestRedis> {
        let root = new_root();
        let tls_port = crate::server::free_port()?.to_string();
        let mut this =
            TestRedis::empty(Deployment::Standalone, format!("rediss://127.0.0.1:{tls_port}"), Some(root.clone()));
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let mut args = vec!["--tls-port", &tls_port, "--tls-cert-file", &cert, "--tls-key-file", &key];
        args.extend_from_slice(&["--tls-auth-clients", "no"]);
        args.extend_from_slice(NOT_PERSISTENT);
        this.servers.push(Process::start(&root, "tls", &args, None)?);
        Ok(this)
    }

    /// A deployment of `kind` at `url` with no server yet; `root`, when given, is removed on drop.
    fn empty(deployment: Deployment, url: String, root: Option<PathBuf>) -> TestRedis {
        TestRedis { deployment, url, servers: Vec::new(), sentinels: Vec::new(), root, container: None }
    }

    fn start(kind: Deployment, persistent: bool, detached: bool) -> Result<TestRedis> {
        #[cfg(feature = "testcontainers")]
        if kind == Deployment::Standalone && !persistent && !crate::container::redis_server_installed() {
            return crate::container::standalone();
        }
        let root = new_root();
        let mut this = TestRedis::empty(kind, String::new(), Some(root.clone()));
        let persistence: &[&str] =
            if persistent { &["--appendonly", "yes", "--appendfsync", "always", "--save", ""] } else { NOT_PERSISTENT };
        let started = match kind {
            Deployment::Standalone => {
                // DEBUG from loopback: the bench reads whether the keyspace is rehashing.
                let args = [persistence, &["--enable-debug-command", "local"]].concat();
                this.servers.push(Process::start_with(&root, "standalone", &args, None, detached)?);
                this.url = format!("redis://127.0.0.1:{}", this.servers[0].port);
                Ok(())
            }
            Deployment::Cluster => this.start_cluster(&root, persistence),
            Deployment::Sentinel => this.start_sentinel(&root, persistence),
        };
        match started {
            Ok(()) => Ok(this),
            // Name the variable of the deployment asked for, not the standalone one.
            Err(Error::NotInstalled { .. }) => Err(Error::not_installed(kind.env())),
            Err(e) => Err(e),
        }
    }

    #[cfg(feature = "testcontainers")]
    pub(crate) fn from_container(url: String, container: Box<dyn std::any::Any + Send>) -> TestRedis {
        let mut this = TestRedis::empty(Deployment::Standalone, url, None);
        this.container = Some(container);
        this
    }

    fn start_cluster(&mut self, root: &std::path::Path, persistence: &[&str]) -> Result<()> {
        let mut args =
            vec!["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"];
        args.extend_from_slice(persistence);
        for i in 0..6 {
            self.servers.push(Process::start(root, &format!("cluster{i}"), &args, None)?);
        }
        let nodes: Vec<String> = self.servers.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        let output = Command::new(&crate::ServerBinaries::current().cli)
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::not_installed("REDIS_CLUSTER_URL"),
                _ => Error::Io { context: "run the cli for --cluster create".to_owned(), source: e },
            })?;
        if !output.status.success() {
            return Err(Error::Unexpected(format!(
                "{} --cluster create failed: {}",
                crate::ServerBinaries::current().cli.display(),
                String::from_utf8_lossy(&output.stdout).lines().rev().take(3).collect::<Vec<_>>().join(" | ")
            )));
        }
        self.wait_cluster_ok()?;
        self.url = format!(
            "redis-cluster://{}?{}",
            nodes[0],
            nodes[1..].iter().map(|n| format!("node={n}")).collect::<Vec<_>>().join("&")
        );
        Ok(())
    }

    fn wait_cluster_ok(&self) -> Result<()> {
        wait_until("cluster_state:ok on every node", Duration::from_secs(30), || {
            for server in &self.servers {
                let info = server.command(&["CLUSTER", "INFO"])?.text().unwrap_or_default();
                if !info.contains("cluster_state:ok") || !info.contains("cluster_known_nodes:6") {
                    return Ok(false);
                }
                // Replicas must be synced, or a failover right after start would lose the slots.
                if server.info_field("replication", "role")?.as_deref() == Some("slave")
                    && server.info_field("replication", "master_link_status")?.as_deref() != Some("up")
                {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }

    fn start_sentinel(&mut self, root: &std::path::Path, persistence: &[&str]) -> Result<()> {
        let primary = Process::start(root, "primary", persistence, None)?;
        let primary_port = primary.port.to_string();
        let mut replica_args = vec!["--replicaof", "127.0.0.1", primary_port.as_str()];
        replica_args.extend_from_slice(persistence);
        let replica = Process::start(root, "replica", &replica_args, None)?;
        self.servers.push(primary);
        self.servers.push(replica);
        let monitored = self.servers[0].port;
        for i in 0..3 {
            let config = move |port: u16| {
                format!(
                    "port {port}\nbind 127.0.0.1\nsentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {monitored} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
                     sentinel failover-timeout {SENTINEL_SERVICE} 5000\n\
                     sentinel parallel-syncs {SENTINEL_SERVICE} 1\n"
                )
            };
            self.sentinels.push(Process::start(root, &format!("sentinel{i}"), &["--sentinel"], Some(&config))?);
        }
        wait_until("the replica to sync", Duration::from_secs(20), || {
            Ok(self.servers[1].info_field("replication", "master_link_status")?.as_deref() == Some("up"))
        })?;
        wait_until("sentinels to see each other and the replica", Duration::from_secs(30), || {
            for sentinel in &self.sentinels {
                let master = sentinel.command(&["SENTINEL", "MASTER", SENTINEL_SERVICE])?;
                let field = |name: &str| field_of(&master, name);
                if field("num-other-sentinels").as_deref() != Some("2") || field("num-slaves").as_deref() != Some("1") {
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        let ports: Vec<String> = self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        self.url = format!(
            "redis-sentinel://{}/0?sentinelServiceName={SENTINEL_SERVICE}&{}",
            ports[0],
            ports[1..].iter().map(|n| format!("node={n}")).collect::<Vec<_>>().join("&")
        );
        Ok(())
    }

    /// The URL to connect to (`redis://`, `redis-cluster://` or `redis-sentinel://`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The kind of deployment.
    pub fn deployment(&self) -> Deployment {
        self.deployment
    }

    /// A key namespace no other test uses, so tests can share a server and run in parallel.
    pub fn namespace(&self) -> Namespace {
        let prefix = format!("t{}x{}x{}", std::process::id(), unique(), nanos() % 1_000_000);
        // The prefix holds only ASCII letters and digits, which `Namespace::new` always accepts.
        Namespace::new(prefix.clone()).unwrap_or_else(|_| unreachable!("prefix {prefix} is valid"))
    }

    fn owned_servers(&self, fault: &'static str) -> Result<&[Process]> {
        if self.root.is_none() {
            return Err(Error::External { fault, env: self.deployment.env() });
        }
        Ok(&self.servers)
    }

    /// The data node that is primary now: the standalone server, the sentinel set's current
    /// primary, or (cluster) the primary of the first node's slots.
    fn primary(&self, fault: &'static str) -> Result<&Process> {
        let servers = self.owned_servers(fault)?;
        for server in servers {
            if server.info_field("replication", "role")?.as_deref() == Some("master") {
                return Ok(server);
            }
        }
        Err(Error::Unexpected("no data node reports role master".to_owned()))
    }

    /// Ports of the data nodes (not sentinels) the harness owns.
    pub fn data_ports(&self) -> Vec<u16> {
        self.servers.iter().map(|s| s.port).collect()
    }

    /// Sends a command to the data node on `port`, for assertions a client should not make.
    pub fn admin(&self, port: u16, args: &[&str]) -> Result<Reply> {
        crate::resp::command(port, args)
    }

    /// Kills the primary with SIGKILL. Restart it with [`TestRedis::restart_killed`].
    pub fn kill_primary(&self) -> Result<u16> {
        let primary = self.primary("kill")?;
        primary.kill();
        Ok(primary.port)
    }

    /// Starts a killed data node again on its port and folder (a cluster node rejoins).
    pub fn restart_killed(&self, port: u16) -> Result<()> {
        let server = self.owned_servers("restart")?.iter().find(|s| s.port == port);
        let server = server.ok_or_else(|| Error::Unexpected(format!("no data node on port {port}")))?;
        server.restart()
    }

    /// Pauses every data node (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) -> Result<()> {
        self.owned_servers("pause")?.iter().try_for_each(|s| s.signal("STOP"))
    }

    /// Resumes paused data nodes (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        self.owned_servers("resume")?.iter().try_for_each(|s| s.signal("CONT"))
    }

    /// Drops every client connection on every data node (`CLIENT KILL TYPE normal|pubsub`).
    pub fn drop_clients(&self) -> Result<()> {
        for server in self.owned_servers("drop_clients")? {
            for kind in ["normal", "pubsub"] {
                expect_ok_or_int(server.command(&["CLIENT", "KILL", "TYPE", kind])?)?;
            }
        }
        Ok(())
    }

    /// Empties the script cache of every data node (`SCRIPT FLUSH`).
    pub fn script_flush(&self) -> Result<()> {
        for server in self.owned_servers("script_flush")? {
            expect_ok_or_int(server.command(&["SCRIPT", "FLUSH"])?)?;
        }
        Ok(())
    }

    /// Cluster: a replica takes over its primary's slots (`CLUSTER FAILOVER`); returns its port.
    pub fn cluster_failover(&self) -> Result<u16> {
        let servers = self.owned_servers("cluster_failover")?;
        let mut replica = None;
        for server in servers {
            if server.info_field("replication", "role")?.as_deref() == Some("slave") {
                replica = Some(server);
                break;
            }
        }
        let replica = replica.ok_or_else(|| Error::Unexpected("no cluster replica to fail over to".to_owned()))?;
        expect_ok_or_int(replica.command(&["CLUSTER", "FAILOVER"])?)?;
        wait_until("the cluster replica to become primary", Duration::from_secs(20), || {
            Ok(replica.info_field("replication", "role")?.as_deref() == Some("master"))
        })?;
        self.wait_cluster_ok()?;
        Ok(replica.port)
    }

    /// Cluster: starts moving the slot of `key` from its primary to another (`CLUSTER SETSLOT
    /// IMPORTING` on the target, then `MIGRATING` on the source), as a reshard does; no key moves
    /// until [`SlotMigration::migrate`] or [`SlotMigration::finish`]. Meanwhile clients meet `ASK`
    /// for keys already moved and `TRYAGAIN` for multi-key commands split between the two nodes.
    pub fn begin_slot_migration(&self, key: &str) -> Result<SlotMigration> {
        let servers = self.owned_servers("begin_slot_migration")?;
        if self.deployment != Deployment::Cluster {
            return Err(Error::Unexpected("begin_slot_migration needs a cluster deployment".to_owned()));
        }
        let any = servers.first().ok_or_else(|| Error::Unexpected("no cluster node".to_owned()))?;
        let slot = match any.command(&["CLUSTER", "KEYSLOT", key])? {
            Reply::Int(slot) => u16::try_from(slot).map_err(|_| Error::Unexpected(format!("slot {slot}")))?,
            other => return Err(Error::Unexpected(format!("CLUSTER KEYSLOT answered {other:?}"))),
        };
        let owner = slot_owner(any.port, slot)?;
        let mut primaries = Vec::new();
        for server in servers {
            if server.info_field("replication", "role")?.as_deref() == Some("master") {
                let id = server.command(&["CLUSTER", "MYID"])?.text().unwrap_or_default();
                let owns = id == owner;
                primaries.push((server.port, id, owns));
            }
        }
        let (source, source_id) = primaries
            .iter()
            .find(|p| p.2)
            .map(|p| (p.0, p.1.clone()))
            .ok_or_else(|| Error::Unexpected(format!("no primary owns slot {slot}")))?;
        let (target, target_id) = primaries
            .iter()
            .find(|p| !p.2)
            .map(|p| (p.0, p.1.clone()))
            .ok_or_else(|| Error::Unexpected("no second primary to move a slot to".to_owned()))?;
        let slot_arg = slot.to_string();
        expect_ok_or_int(crate::resp::command(target, &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &source_id])?)?;
        expect_ok_or_int(crate::resp::command(source, &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &target_id])?)?;
        let nodes = servers.iter().map(|s| s.port).collect();
        Ok(SlotMigration { slot, source, target, target_id, primaries: primaries.iter().map(|p| p.0).collect(), nodes })
    }

    /// Sentinel: forces a failover (`SENTINEL FAILOVER`) and waits until every sentinel names the
    /// new primary; returns its port.
    pub fn sentinel_failover(&self) -> Result<u16> {
        if self.sentinels.is_empty() {
            return Err(Error::External { fault: "sentinel_failover", env: self.deployment.env() });
        }
        let old = self.current_primary_port()?;
        expect_ok_or_int(self.sentinels[0].command(&["SENTINEL", "FAILOVER", SENTINEL_SERVICE])?)?;
        let new = self.wait_new_primary(old)?;
        // Until the old primary is reconfigured as a replica it still takes writes that the
        // failover will then discard; wait, so tests see the deployment settled.
        wait_until("the old primary to become a replica", Duration::from_secs(20), || {
            Ok(crate::resp::command(old, &["ROLE"])
                .map(|r| matches!(r, Reply::Array(Some(ref a)) if a.first().and_then(Reply::text).as_deref() == Some("slave")))
                .unwrap_or(false))
        })?;
        Ok(new)
    }

    /// Demotes the primary to a replica of the other data node with `REPLICAOF`, promoting that
    /// node, without closing any connection: clients writing to the old primary get `READONLY`.
    /// Sentinels then notice the switch and follow it. Returns the new primary's port.
    pub fn demote_primary(&self) -> Result<u16> {
        let servers = self.owned_servers("demote_primary")?;
        if self.deployment != Deployment::Sentinel {
            return Err(Error::Unexpected("demote_primary needs a sentinel deployment".to_owned()));
        }
        let old = self.primary("demote_primary")?;
        let new =
            servers.iter().find(|s| s.port != old.port).ok_or_else(|| Error::Unexpected("no replica".to_owned()))?;
        expect_ok_or_int(new.command(&["REPLICAOF", "NO", "ONE"])?)?;
        expect_ok_or_int(old.command(&["REPLICAOF", "127.0.0.1", &new.port.to_string()])?)?;
        Ok(new.port)
    }

    /// The port of the primary the sentinels name now.
    pub fn current_primary_port(&self) -> Result<u16> {
        let Some(sentinel) = self.sentinels.first() else {
            return self.primary("current_primary_port").map(|p| p.port);
        };
        match sentinel.command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE])? {
            Reply::Array(Some(addr)) if addr.len() == 2 => addr[1]
                .text()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| Error::Unexpected("sentinel gave a bad port".to_owned())),
            other => Err(Error::Unexpected(format!("sentinel answered {other:?}"))),
        }
    }

    /// Waits until every sentinel names a primary other than `old` and that node is a primary.
    pub fn wait_new_primary(&self, old: u16) -> Result<u16> {
        let mut new = old;
        wait_until("sentinels to agree on a new primary", Duration::from_secs(30), || {
            let mut ports = Vec::new();
            for sentinel in &self.sentinels {
                if let Reply::Array(Some(addr)) =
                    sentinel.command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE])?
                {
                    ports.push(addr.get(1).and_then(Reply::text).and_then(|p| p.parse::<u16>().ok()));
                }
            }
            let Some(Some(first)) = ports.first().copied() else { return Ok(false) };
            new = first;
            let agreed = ports.len() == self.sentinels.len() && ports.iter().all(|p| *p == Some(first)) && first != old;
            let is_primary = crate::resp::command(first, &["ROLE"])
                .map(|r| matches!(r, Reply::Array(Some(ref a)) if a.first().and_then(Reply::text).as_deref() == Some("master")))
                .unwrap_or(false);
            Ok(agreed && is_primary)
        })?;
        Ok(new)
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.sentinels.clear();
        self.servers.clear();
        if let Some(root) = &self.root {
            let _ = std::fs::remove_dir_all(root);
        }
        if let Some(container) = self.container.take() {
            // Stopping the container drives a runtime of its own: do it off the test's runtime.
            let _ = std::thread::spawn(move || drop(container)).join();
        }
    }
}

/// A slot on its way from one cluster primary to another ([`TestRedis::begin_slot_migration`]).
#[derive(Debug, Clone)]
pub struct SlotMigration {
    /// The slot that moves.
    pub slot: u16,
    /// The port of the primary that owned it.
    pub source: u16,
    /// The port of the primary it moves to.
    pub target: u16,
    target_id: String,
    primaries: Vec<u16>,
    nodes: Vec<u16>,
}

impl SlotMigration {
    /// Moves `key` (one of the slot's) to the target now (`MIGRATE`), as a reshard does key by
    /// key; a key that is not on the source is left alone.
    pub fn migrate(&self, key: &str) -> Result<()> {
        let target = self.target.to_string();
        expect_ok_or_int(crate::resp::command(self.source, &["MIGRATE", "127.0.0.1", &target, key, "0", "5000"])?)
    }

    /// Moves the slot's remaining keys and gives the slot to the target on every primary
    /// (`CLUSTER SETSLOT … NODE`), which ends the migration; returns once every node's slot
    /// table says so.
    pub fn finish(&self) -> Result<()> {
        let (slot, target) = (self.slot.to_string(), self.target.to_string());
        loop {
            let keys = match crate::resp::command(self.source, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"])? {
                Reply::Array(Some(keys)) => keys.iter().filter_map(Reply::text).collect::<Vec<_>>(),
                other => return Err(Error::Unexpected(format!("CLUSTER GETKEYSINSLOT answered {other:?}"))),
            };
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1", target.as_str(), "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            expect_ok_or_int(crate::resp::command(self.source, &args)?)?;
        }
        // The target first, then the source and the other primaries, as redis-cli --cluster
        // reshard does.
        let others = self.primaries.iter().copied().filter(|&p| p != self.target && p != self.source);
        for port in [self.target, self.source].into_iter().chain(others) {
            expect_ok_or_int(crate::resp::command(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &self.target_id])?)?;
        }
        wait_until("every node to give the slot to its new owner", Duration::from_secs(20), || {
            for &port in &self.nodes {
                if slot_owner(port, self.slot)? != self.target_id {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }
}

/// The id of the node that owns `slot`, by the `CLUSTER SLOTS` of the node on `port`.
fn slot_owner(port: u16, slot: u16) -> Result<String> {
    let Reply::Array(Some(ranges)) = crate::resp::command(port, &["CLUSTER", "SLOTS"])? else {
        return Err(Error::Unexpected("CLUSTER SLOTS answered no array".to_owned()));
    };
    for range in ranges {
        let Reply::Array(Some(parts)) = range else { continue };
        let bound = |i: usize| match parts.get(i) {
            Some(Reply::Int(n)) => Some(*n),
            _ => None,
        };
        if let (Some(start), Some(end)) = (bound(0), bound(1))
            && (start..=end).contains(&i64::from(slot))
            && let Some(Reply::Array(Some(primary))) = parts.get(2)
        {
            return Ok(primary.get(2).and_then(Reply::text).unwrap_or_default());
        }
    }
    Err(Error::Unexpected(format!("no node owns slot {slot}")))
}

fn expect_ok_or_int(reply: Reply) -> Result<()> {
    match reply {
        Reply::Error(e) => Err(Error::Unexpected(e)),
        _ => Ok(()),
    }
}

/// A field of a flat `[name, value, name, value, ...]` reply such as `SENTINEL MASTER`.
fn field_of(reply: &Reply, name: &str) -> Option<String> {
    let Reply::Array(Some(items)) = reply else { return None };
    items.chunks(2).find(|pair| pair[0].text().as_deref() == Some(name)).and_then(|pair| pair.get(1)?.text())
}

/// Server arguments for a deployment whose data need not survive a restart.
const NOT_PERSISTENT: &[&str] = &["--appendonly", "no", "--save", ""];

/// A new folder for one deployment's servers, under the system's temporary folder.
fn new_root() -> PathBuf {
    std::env::temp_dir().join(format!("redtail-test-{}-{}", std::process::id(), unique()))
}

fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
