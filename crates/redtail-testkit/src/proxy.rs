//! A TCP proxy on loopback that injects network faults between a client and a server: latency,
//! a stall (bytes stop flowing, nothing is closed: a half-open connection as a dead route or a
//! dropped NAT entry leaves it), a reset, and a bandwidth cap.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
    task::JoinHandle,
};

/// A fault-injecting TCP proxy in front of one server, for tests of what a client does when the
/// network misbehaves. Point the client at [`FaultProxy::addr`]; faults apply from the moment
/// they are set, to connections already open (a stall: to those only).
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use std::time::Duration;
/// use redtail_testkit::FaultProxy;
///
/// let proxy = FaultProxy::start("127.0.0.1:6379".parse().unwrap()).await?;
/// let url = format!("redis://{}", proxy.addr()); // give this to the client under test
/// proxy.set_latency(Duration::from_millis(200)); // every chunk, each way
/// proxy.stall(); // open connections go silent; new ones work
/// proxy.reset(); // every open connection is closed with a reset
/// # let _ = url; Ok(()) }
/// ```
///
/// Dropping the proxy closes its listener and every connection.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    /// Added before each chunk is passed on, in ms.
    latency_ms: AtomicU64,
    /// Bytes per second each way per connection; 0: no cap.
    bandwidth: AtomicU64,
    /// Bumped by each stall: connections opened before it pass nothing.
    stalls: watch::Sender<u64>,
    /// Bumped by each reset: connections opened before it close.
    resets: watch::Sender<u64>,
    open: AtomicUsize,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl FaultProxy {
    /// A proxy on a free loopback port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            latency_ms: AtomicU64::new(0),
            bandwidth: AtomicU64::new(0),
            stalls: watch::Sender::new(0),
            resets: watch::Sender::new(0),
            open: AtomicUsize::new(0),
            tasks: Mutex::default(),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(FaultProxy { addr, shared, accept })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Delays every chunk of bytes by `latency`, each way (zero: none).
    pub fn set_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.shared.latency_ms.store(ms, Ordering::SeqCst);
    }

    /// Caps each connection at `bytes_per_second` each way (`None`: no cap).
    pub fn set_bandwidth(&self, bytes_per_second: Option<u64>) {
        self.shared.bandwidth.store(bytes_per_second.unwrap_or(0), Ordering::SeqCst);
    }

    /// Every connection open now stops passing bytes, both ways, for good, without being closed:
    /// neither end learns anything until it gives up on its own. Later connections pass bytes.
    pub fn stall(&self) {
        self.shared.stalls.send_modify(|n| *n += 1);
    }

    /// Every connection open now is closed, with a reset (`SO_LINGER` 0) on both sides.
    pub fn reset(&self) {
        self.shared.resets.send_modify(|n| *n += 1);
    }

    /// How many client connections are open through the proxy.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        let shared_task = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(shared_task.upstream).await else { return };
            shared_task.open.fetch_add(1, Ordering::SeqCst);
            proxy(client, server, &shared_task).await;
            shared_task.open.fetch_sub(1, Ordering::SeqCst);
        });
        let mut tasks = shared.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }
}

/// Passes bytes both ways until either side closes or a reset; a stall freezes both ways.
async fn proxy(client: TcpStream, server: TcpStream, shared: &Shared) {
    let (stalls, mut resets) = (shared.stalls.subscribe(), shared.resets.subscribe());
    // A zero linger: closing the sockets sends a reset. Each side's end is first passed on as a
    // FIN (`shutdown`), so only a reset by the proxy reaches a peer as one.
    #[allow(deprecated)] // `set_zero_linger` needs a newer tokio than the workspace's floor
    let _ = (
        client.set_nodelay(true),
        server.set_nodelay(true),
        client.set_linger(Some(Duration::ZERO)),
        server.set_linger(Some(Duration::ZERO)),
    );
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, stalls.clone(), shared);
    let down = pump(server_read, client_write, stalls, shared);
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = resets.changed() => tracing::debug!("fault proxy: connection reset"),
    }
}

/// Copies `from` to `to` with the proxy's faults, until `from` ends (then passes the end on) or
/// `to` fails.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut stalls: watch::Receiver<u64>, shared: &Shared) {
    let stalled_at = *stalls.borrow_and_update();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = async { stalls.wait_for(|n| *n != stalled_at).await.is_ok() } => std::future::pending().await,
        };
        if stalled(&stalls, stalled_at) {
            std::future::pending::<()>().await;
        }
        let latency = shared.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let bandwidth = shared.bandwidth.load(Ordering::SeqCst);
        if bandwidth > 0 {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / bandwidth as f64)).await;
        }
        if stalled(&stalls, stalled_at) {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Whether a stall began after `stalled_at` (the stall count when the connection opened).
fn stalled(stalls: &watch::Receiver<u64>, stalled_at: u64) -> bool {
    *stalls.borrow() != stalled_at
}
