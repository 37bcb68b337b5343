//! A fault proxy: a TCP proxy on loopback between real clients (SDK devices, `syncline-todo`)
//! and a real relay that, driven by a seed, does to each connection what networks do:
//! delays its bytes, holds one direction back while the other flows (so each end sees the
//! other's frames late and in a different interleaving), cuts it mid-frame, drops it, or
//! blackholes it (the sockets stay open, nothing passes). The same seed makes the same choices
//! for the same connection order; [`FaultProxy::calm`] ends the faults so a test can check
//! that everyone converged and nothing was lost.
//!
//! Every loop is bounded: sockets read with a short timeout and check the proxy's flags, and a
//! blackhole lasts at most [`MAX_BLACKHOLE`].

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a pump looks at the proxy's flags while its socket is quiet.
const POLL: Duration = Duration::from_millis(20);

/// The longest a blackholed connection stays open.
pub const MAX_BLACKHOLE: Duration = Duration::from_secs(3);

/// What happens to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Passes everything (perhaps delayed).
    Clean,
    /// Forwards this many bytes in one direction, then closes both ways (mid-frame, almost
    /// always).
    Cut { upstream: bool, after_bytes: u64 },
    /// Closes both ways after this long.
    Drop { after: Duration },
    /// After this long, passes nothing more, for `for_` (then closes).
    Blackhole { after: Duration, for_: Duration },
}

/// What the proxy did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections cut mid-stream.
    pub cut: u64,
    /// Connections dropped.
    pub dropped: u64,
    /// Connections blackholed.
    pub blackholed: u64,
    /// Chunks delayed or held back.
    pub delayed: u64,
    /// Bytes forwarded, both ways.
    pub bytes: u64,
}

struct Shared {
    upstream: SocketAddr,
    seed: u64,
    /// Faults on (until `calm`).
    faulty: AtomicBool,
    stop: AtomicBool,
    next: AtomicU64,
    stats: Mutex<FaultStats>,
}

impl Shared {
    fn count(&self, f: impl FnOnce(&mut FaultStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn live(&self) -> bool {
        !self.stop.load(Ordering::SeqCst)
    }
}

/// A running fault proxy; stopped (every connection closed) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`127.0.0.1:PORT`), with
    /// faults chosen from `seed`.
    ///
    /// # Errors
    /// If it cannot listen or `upstream` is not an address.
    pub fn start(upstream: &str, seed: u64) -> std::io::Result<Self> {
        let upstream: SocketAddr = upstream
            .parse()
            .map_err(|e| std::io::Error::new(ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            seed,
            faulty: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            next: AtomicU64::new(0),
            stats: Mutex::new(FaultStats::default()),
        });
        let accepting = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || accept_loop(&listener, &accepting))?;
        Ok(Self {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The proxy's address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The WebSocket URL of the relay through the proxy.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Ends the faults: connections with a fate still to come close now (clients reconnect),
    /// and new ones pass everything at once.
    pub fn calm(&self) {
        self.shared.faulty.store(false, Ordering::SeqCst);
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> FaultStats {
        *self.shared.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut pumps: Vec<JoinHandle<()>> = Vec::new();
    for client in listener.incoming() {
        if !shared.live() {
            break;
        }
        let Ok(client) = client else { continue };
        let n = shared.next.fetch_add(1, Ordering::SeqCst);
        let Ok(server) = TcpStream::connect(shared.upstream) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        shared.count(|s| s.connections += 1);
        let mut rng = fastrand::Rng::with_seed(shared.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let fate = if shared.faulty.load(Ordering::SeqCst) {
            choose(&mut rng)
        } else {
            Fate::Clean
        };
        let opened = Instant::now();
        let closed = Arc::new(AtomicBool::new(false));
        for upstream in [true, false] {
            let (from, to) = match (client.try_clone(), server.try_clone()) {
                (Ok(c), Ok(s)) if upstream => (c, s),
                (Ok(c), Ok(s)) => (s, c),
                _ => break,
            };
            let pump = Pump {
                from,
                to,
                upstream,
                fate,
                opened,
                rng: fastrand::Rng::with_seed(rng.u64(..)),
                shared: Arc::clone(shared),
                closed: Arc::clone(&closed),
            };
            if let Ok(handle) = std::thread::Builder::new()
                .name("fault-pump".into())
                .spawn(move || pump.run())
            {
                pumps.push(handle);
            }
        }
        pumps.retain(|p| !p.is_finished());
    }
    for pump in pumps {
        let _ = pump.join();
    }
}

/// A connection's fate while the faults last: it fails in one of the ways networks do, some
/// soon, some after seconds of clean (delayed) traffic, so every device meets many.
fn choose(rng: &mut fastrand::Rng) -> Fate {
    match rng.u32(0..10) {
        0..=2 => Fate::Drop {
            after: Duration::from_millis(rng.u64(1000..5000)),
        },
        3..=5 => Fate::Cut {
            upstream: rng.bool(),
            after_bytes: rng.u64(1..4 << 10),
        },
        6 | 7 => Fate::Drop {
            after: Duration::from_millis(rng.u64(50..1000)),
        },
        _ => Fate::Blackhole {
            after: Duration::from_millis(rng.u64(0..1000)),
            for_: Duration::from_millis(rng.u64(200..MAX_BLACKHOLE.as_millis() as u64)),
        },
    }
}

/// One direction of one connection.
struct Pump {
    from: TcpStream,
    to: TcpStream,
    /// Client to relay.
    upstream: bool,
    fate: Fate,
    opened: Instant,
    rng: fastrand::Rng,
    shared: Arc<Shared>,
    /// Either direction closed the connection.
    closed: Arc<AtomicBool>,
}

impl Pump {
    fn run(mut self) {
        let _ = self.from.set_read_timeout(Some(POLL));
        let mut forwarded: u64 = 0;
        let mut buf = vec![0u8; 16 << 10];
        let counted = |shared: &Shared, f: fn(&mut FaultStats)| shared.count(f);
        loop {
            if !self.shared.live() || self.closed.load(Ordering::SeqCst) {
                break;
            }
            let faulty = self.shared.faulty.load(Ordering::SeqCst);
            let elapsed = self.opened.elapsed();
            // A fate still to come when the faults end closes the connection: clients
            // reconnect to a calm proxy.
            match self.fate {
                Fate::Drop { after } if elapsed >= after || !faulty => {
                    if self.upstream {
                        counted(&self.shared, |s| s.dropped += 1);
                    }
                    break;
                }
                Fate::Blackhole { after, for_ } if elapsed >= after => {
                    if self.upstream {
                        counted(&self.shared, |s| s.blackholed += 1);
                    }
                    // Nothing passes; the sockets stay open (reads are discarded).
                    let until = self.opened + after + for_;
                    while Instant::now() < until && self.shared.live() && faulty_now(&self.shared) {
                        if matches!(self.from.read(&mut buf), Ok(0)) {
                            break;
                        }
                    }
                    break;
                }
                Fate::Blackhole { .. } | Fate::Cut { .. } if !faulty => break,
                _ => {}
            }
            let n = match self.from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue;
                }
                Err(_) => break,
            };
            let mut chunk = &buf[..n];
            let mut cut = false;
            if let Fate::Cut {
                upstream,
                after_bytes,
            } = self.fate
                && upstream == self.upstream
                && forwarded + n as u64 >= after_bytes
            {
                chunk = &chunk[..usize::try_from(after_bytes - forwarded).unwrap_or(n)];
                cut = true;
            }
            if faulty && self.rng.u32(0..4) == 0 {
                // Delayed, or this direction held back while the other flows.
                let hold = if self.rng.u32(0..4) == 0 {
                    self.rng.u64(100..400)
                } else {
                    self.rng.u64(1..30)
                };
                counted(&self.shared, |s| s.delayed += 1);
                std::thread::sleep(Duration::from_millis(hold));
            }
            if self.to.write_all(chunk).is_err() {
                break;
            }
            forwarded += chunk.len() as u64;
            let len = chunk.len() as u64;
            self.shared.count(|s| s.bytes += len);
            if cut {
                counted(&self.shared, |s| s.cut += 1);
                break;
            }
        }
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.from.shutdown(Shutdown::Both);
        let _ = self.to.shutdown(Shutdown::Both);
    }
}

fn faulty_now(shared: &Shared) -> bool {
    shared.faulty.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback that answers each connection until it closes.
    fn echo() -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handle = std::thread::spawn(move || {
            for stream in listener.incoming().take(64) {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, handle)
    }

    #[test]
    fn a_seed_decides_each_connections_fate_and_calm_lets_everything_pass() {
        let fates = |seed: u64| -> Vec<Fate> {
            let mut out = Vec::new();
            for n in 0..20u64 {
                let mut rng =
                    fastrand::Rng::with_seed(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                out.push(choose(&mut rng));
            }
            out
        };
        assert_eq!(fates(7), fates(7), "the same seed, the same fates");
        assert_ne!(fates(7), fates(8));
        assert!(
            fates(7).iter().all(|f| *f != Fate::Clean),
            "every connection fails"
        );

        let (echo, _server) = echo();
        let proxy = FaultProxy::start(&echo.to_string(), 7).expect("proxy");
        proxy.calm();
        let mut client = TcpStream::connect(proxy.addr()).expect("connect");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let message = vec![42u8; 100_000];
        client.write_all(&message).expect("write");
        let mut back = vec![0u8; message.len()];
        client.read_exact(&mut back).expect("everything comes back");
        assert_eq!(back, message);
        assert_eq!(proxy.stats().connections, 1);
    }
}
