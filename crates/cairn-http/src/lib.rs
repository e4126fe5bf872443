//! cairn-http: the HTTP edge of Cairn's control plane, free of engine code.
//!
//! * [`message`]: transport-free [`Request`] and [`Response`] and the
//!   [`Handler`] trait that Cairn's APIs implement (so every endpoint is
//!   testable without sockets).
//! * [`server`]: serves a [`Handler`] with hyper on a tokio runtime that lives
//!   on the server's own thread (the engine never sees tokio): header-read
//!   and body deadlines, stall timeouts, bounded heads and bodies, keep-alive,
//!   chunked bodies, pipelining, a connection cap, graceful shutdown, on TCP
//!   and on an owner-only Unix socket whose requests are trusted.
//! * [`ui`]: the web UI (plain HTML, CSS, JavaScript and SVG, embedded in the
//!   binary; no build step, no network needed).

pub mod message;
pub mod server;
pub mod ui;

pub use message::{error_response, Handler, Peer, Request, Response};
pub use server::{HttpServer, Limits, ServerError};
