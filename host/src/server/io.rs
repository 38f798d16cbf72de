//! The socket as hyper reads it, with the header and idle deadlines.
//!
//! While a connection has no request in flight, it must either stay silent for at
//! most `server.idle_timeout`, or, once a byte of a new request arrives, complete the
//! request's head within `server.header_timeout`. A read past either deadline fails
//! with `TimedOut`, and hyper closes the connection. The clocks live here, on the
//! read side, because hyper reads whenever it waits for a head: a client that sends
//! one byte a second never gets a head parsed, and is cut off.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::conn::{ConnState, Cut};

/// What the socket is waiting for while no request is in flight.
enum Wait {
    /// Nothing armed: a request is in flight.
    None,
    /// Silence since the connection opened or its last response ended.
    Idle(Pin<Box<Sleep>>),
    /// Part of a head has arrived; the rest is due.
    Head(Pin<Box<Sleep>>),
}

pub struct Watched<S> {
    inner: S,
    state: Arc<ConnState>,
    idle_timeout: Duration,
    header_timeout: Duration,
    wait: Wait,
    /// `state.requests()` when the deadline was armed: a change means a head was
    /// parsed since, so the deadline no longer applies.
    armed_at: u64,
    /// `evhost_http_received_bytes`.
    received: Counter,
}

impl<S> Watched<S> {
    pub fn new(
        inner: S,
        state: Arc<ConnState>,
        idle_timeout: Duration,
        header_timeout: Duration,
        received: Counter,
    ) -> Watched<S> {
        Watched {
            inner,
            state,
            idle_timeout,
            header_timeout,
            wait: Wait::None,
            armed_at: 0,
            received,
        }
    }

    /// Brings the deadline up to date with the connection's state.
    fn rearm(&mut self) {
        let requests = self.state.requests();
        if self.state.is_busy() || (!matches!(self.wait, Wait::None) && requests != self.armed_at) {
            self.wait = Wait::None;
        }
        if !self.state.is_busy() && matches!(self.wait, Wait::None) {
            self.wait = Wait::Idle(Box::pin(tokio::time::sleep(self.idle_timeout)));
            self.armed_at = requests;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.state.register_reader(cx.waker());
        this.rearm();
        let expired = match &mut this.wait {
            Wait::None => None,
            Wait::Idle(sleep) => sleep.as_mut().poll(cx).is_ready().then_some(Cut::Idle),
            Wait::Head(sleep) => sleep.as_mut().poll(cx).is_ready().then_some(Cut::Header),
        };
        if let Some(cut) = expired {
            this.state.set_cut(cut);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                match cut {
                    Cut::Idle => "idle past server.idle_timeout",
                    Cut::Header => "request head not complete within server.header_timeout",
                },
            )));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.received.inc_by((buf.filled().len() - before) as u64);
            if let Wait::Idle(_) = this.wait {
                // The first bytes of a head: from now on the head is due. The new
                // timer is polled (and so registered) on hyper's next read, which
                // follows at once since this one returned data.
                this.wait = Wait::Head(Box::pin(tokio::time::sleep(this.header_timeout)));
            }
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
