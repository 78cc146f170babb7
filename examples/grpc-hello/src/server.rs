//! The Greeter server: answers `SayHello(name)` with `Hello NAME`.

use std::future::Future;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status, transport::Server};

use crate::proto::{
    HelloReply, HelloRequest,
    greeter_server::{self, GreeterServer},
};

/// The port of gRPC's examples, and of the greeter's compose service.
pub const DEFAULT_PORT: u16 = 50051;

struct Greeter {
    /// Print each request's name, as the original example's server does.
    log: bool,
}

#[tonic::async_trait]
impl greeter_server::Greeter for Greeter {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let name = request.into_inner().name;
        if self.log {
            println!("received: {name}");
        }
        Ok(Response::new(HelloReply { message: format!("Hello {name}") }))
    }
}

/// Serves the Greeter on `listener` until `shutdown` resolves, then lets
/// calls in progress finish. `log` prints each request's name on stdout.
pub async fn serve(
    listener: TcpListener,
    log: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(GreeterServer::new(Greeter { log }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
