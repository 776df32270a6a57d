//! The upstream every set-up talks to: small and fast, so the proxies are what is measured.
//!
//! - HTTP/1.1 and HTTP/2 (h2c prior knowledge) on one port: any `GET` answers a fixed body of
//!   `--body-size` bytes (1 KiB default), built once and shared.
//! - gRPC unary echo over HTTP/2: `POST /weft.bench.Echo/Echo` answers the request's message
//!   with `grpc-status: 0` in the trailers.
//! - TCP echo on a second port, for opaque TCP latency and bulk throughput.

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;

/// The gRPC method the echo service answers.
pub const GRPC_ECHO_PATH: &str = "/weft.bench.Echo/Echo";

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// Runs the HTTP and TCP servers until the process is stopped. Prints `http ADDR` and
/// `tcp ADDR` lines once both listen.
pub async fn run(http: SocketAddr, tcp: SocketAddr, body_size: usize) -> anyhow::Result<()> {
    let http = TcpListener::bind(http).await?;
    let tcp = TcpListener::bind(tcp).await?;
    println!("http {}", http.local_addr()?);
    println!("tcp {}", tcp.local_addr()?);
    let body = Bytes::from(vec![b'w'; body_size]);
    tokio::spawn(tcp_echo(tcp));
    loop {
        let (stream, _) = http.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(answer(req, body).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(req: Request<Incoming>, body: Bytes) -> Response<Body> {
    if req.method() == Method::POST && req.uri().path() == GRPC_ECHO_PATH {
        let message = match req.into_body().collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frames: [Result<_, hyper::Error>; 2] =
            [Ok(Frame::data(message)), Ok(Frame::trailers(trailers))];
        let mut rsp = Response::new(BodyExt::boxed_unsync(StreamBody::new(
            futures_util::stream::iter(frames),
        )));
        rsp.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        return rsp;
    }
    Response::new(BodyExt::boxed_unsync(
        Full::new(body).map_err(|never| match never {}),
    ))
}

async fn tcp_echo(listener: TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}
