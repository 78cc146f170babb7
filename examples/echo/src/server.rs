//! The echo server: every byte a connection sends comes back on it, until
//! the client closes it; many connections at once.

use std::future::Future;

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::client::error_name;

/// Accepts connections on `listener` and echoes each until `shutdown`
/// resolves. `log` prints a line per connection on stdout.
pub async fn serve(listener: TcpListener, log: bool, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let (stream, peer) = accepted?;
                tokio::spawn(async move {
                    let (bytes, end) = echo(stream).await;
                    if log {
                        println!("{peer}: {bytes} bytes echoed, {end}");
                    }
                });
            }
        }
    }
}

/// Echoes until the peer closes or the connection fails: the bytes echoed,
/// and how it ended (`closed`, `ECONNRESET`...).
async fn echo(mut stream: TcpStream) -> (u64, String) {
    let mut buf = [0u8; 4096];
    let mut total = 0u64;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => return (total, "closed".to_owned()),
            Ok(n) => n,
            Err(e) => return (total, error_name(&e)),
        };
        if let Err(e) = stream.write_all(&buf[..n]).await {
            return (total, error_name(&e));
        }
        total += n as u64;
    }
}
