//! A TCP proxy on loopback for fault tests: it forwards, stalls (holds every byte, both ways,
//! until told to forward again) or drops connections. Put it between the gateway and a bank
//! with the bank's `--advertise` flag.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What the proxy does with traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward,
    Stall,
    Drop,
}

/// A running proxy; stops (closing every connection) when dropped.
pub struct Proxy {
    address: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    mode: watch::Sender<Mode>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0; forwards to `target` once one is set.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let target = Arc::new(Mutex::new(None));
        let (mode, mode_receiver) = watch::channel(Mode::Forward);
        let accept_target = Arc::clone(&target);
        let accept_task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                let Some(target) = *accept_target.lock().unwrap() else {
                    continue;
                };
                let mode = mode_receiver.clone();
                connections.spawn(relay(inbound, target, mode));
            }
        });
        Proxy {
            address,
            target,
            mode,
            accept_task,
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn set_target(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = Some(target);
    }

    pub fn set_mode(&self, mode: Mode) {
        let _ = self.mode.send(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn relay(inbound: TcpStream, target: SocketAddr, mode: watch::Receiver<Mode>) {
    if *mode.borrow() == Mode::Drop {
        return;
    }
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (inbound_read, inbound_write) = inbound.into_split();
    let (outbound_read, outbound_write) = outbound.into_split();
    tokio::select! {
        _ = pump(inbound_read, outbound_write, mode.clone()) => {}
        _ = pump(outbound_read, inbound_write, mode) => {}
    }
}

/// Waits until the mode is Forward; false if it became Drop (or the proxy is gone).
async fn forwarding(mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        match *mode.borrow_and_update() {
            Mode::Forward => return true,
            Mode::Drop => return false,
            Mode::Stall => {}
        }
        if mode.changed().await.is_err() {
            return false;
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if !forwarding(&mut mode).await {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = mode.changed() => continue,
        };
        let count = match read {
            Ok(0) | Err(_) => return,
            Ok(count) => count,
        };
        // Bytes read just as a stall began are held too, not delivered.
        if !forwarding(&mut mode).await {
            return;
        }
        if to.write_all(&buffer[..count]).await.is_err() {
            return;
        }
    }
}
