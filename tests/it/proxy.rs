//! A TCP proxy in front of RabbitMQ that a test can freeze: while frozen it forwards nothing
//! in either direction and closes nothing, as when a network path silently drops packets. A
//! process connected through it is cut off from the broker without knowing it. It can also
//! freeze one direction only (the broker still talks, nothing the process sends arrives), and
//! cut every connection at once, dropping what it holds.

use std::sync::{Arc, Mutex};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

pub struct Proxy {
    pub port: u16,
    /// Forwarding towards the target, and back.
    up: Arc<watch::Sender<bool>>,
    down: Arc<watch::Sender<bool>>,
    pipes: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target` (host:port).
    pub async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(watch::channel(false).0);
        let down = Arc::new(watch::channel(false).0);
        let pipes: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let target = target.to_owned();
        let accept = {
            let (up, down, pipes) = (up.clone(), down.clone(), pipes.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        continue;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let mut pipes = pipes.lock().unwrap();
                    pipes.push(tokio::spawn(pipe(cr, sw, up.subscribe())));
                    pipes.push(tokio::spawn(pipe(sr, cw, down.subscribe())));
                }
            })
        };
        Proxy {
            port,
            up,
            down,
            pipes,
            accept,
        }
    }

    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Stops (true) or resumes (false) forwarding.
    pub fn freeze(&self, frozen: bool) {
        self.up.send_replace(frozen);
        self.down.send_replace(frozen);
    }

    /// Stops (true) or resumes (false) forwarding towards the target only.
    pub fn freeze_upstream(&self, frozen: bool) {
        self.up.send_replace(frozen);
    }

    /// Closes every connection through the proxy, dropping what it has not forwarded.
    pub fn cut(&self) {
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Nothing is read while frozen: the sender's data waits in the socket buffers.
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = tokio::select! {
            n = from.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = frozen.wait_for(|f| *f) => continue,
        };
        // Data read just before a freeze is held until the thaw.
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
