//! A request body that can be sent more than once: the basis of retries and mirroring.
//!
//! [`ReplayBody`] wraps the client's body. The body sent first streams it frame by frame as
//! usual and, while what it has read fits the cap (64 KiB by default), keeps each data frame (a
//! `Bytes` clone: a reference count, never a copy) and the trailers. A clone made with
//! [`ReplayBody::try_clone`] yields the kept frames again and then, if the client's body has
//! not ended yet, goes on reading it where the last body stopped (keeping what it reads too).
//! Past the cap nothing more is kept and the kept frames are freed: the body streams on with no
//! copy, but can no longer be replayed ([`ReplayBody::is_capped`]), and a clone made before
//! that answers an error rather than a truncated body.
//!
//! The bodies take turns: the reading state moves into the body that polls first and back
//! when it is dropped. A caller (a retry stage) drops one try's request before it sends the
//! next; a clone polled while another still holds the state answers [`ReplayError::InUse`].

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::body::BoxError;

/// The most a request body may hold and still be replayed.
pub const DEFAULT_REPLAY_CAP: usize = 64 * 1024;

/// Why a replayed body cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Another body of the same request is still reading: a caller's bug.
    #[error("a replay of the request body was read while another copy was still in use")]
    InUse,
    /// The body grew past the cap (or failed) after this copy was made, so it cannot be
    /// replayed whole.
    #[error("the request body can no longer be replayed: it is larger than the replay cap or failed mid-way")]
    Capped,
}

/// A body that can be replayed while it fits the cap. See the module docs.
#[derive(Debug)]
pub struct ReplayBody<B> {
    /// The reading state while this body holds it (boxed: a request body travels inside every
    /// stage's future, so it must stay small).
    state: Option<Box<State<B>>>,
    shared: Arc<Shared<B>>,
    /// How many of the kept data frames this body has yielded.
    next_chunk: usize,
    /// Whether this body has yielded the trailers (or found there are none).
    trailers_done: bool,
    /// Whether this is the first body (the one that may read past the cap).
    first: bool,
}

#[derive(Debug)]
struct Shared<B> {
    /// The reading state when no body holds it.
    state: Mutex<Option<Box<State<B>>>>,
    /// Set once the body cannot be replayed any more.
    capped: AtomicBool,
    cap: usize,
    /// The client's body's size hint, for copies that start from the beginning.
    size_hint: SizeHint,
}

#[derive(Debug)]
struct State<B> {
    chunks: Vec<Bytes>,
    buffered: usize,
    trailers: Option<HeaderMap>,
    /// The rest of the client's body, until it ends.
    rest: Option<B>,
}

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Wraps `body` so that up to `cap` bytes of it can be replayed. A body whose size hint
    /// already says it is larger is handed back untouched: it will not be replayed, so there
    /// is nothing to keep.
    #[allow(clippy::result_large_err)]
    pub fn new(body: B, cap: usize) -> Result<Self, B> {
        let size_hint = body.size_hint();
        if size_hint.lower() > cap as u64 {
            return Err(body);
        }
        let state = Box::new(State {
            chunks: Vec::new(),
            buffered: 0,
            trailers: None,
            rest: Some(body),
        });
        Ok(Self {
            state: None,
            shared: Arc::new(Shared {
                state: Mutex::new(Some(state)),
                capped: AtomicBool::new(false),
                cap,
                size_hint,
            }),
            next_chunk: 0,
            trailers_done: false,
            first: true,
        })
    }

    /// A copy that yields the body again from its start, or `None` once the body has grown
    /// past the cap.
    pub fn try_clone(&self) -> Option<Self> {
        if self.is_capped() {
            return None;
        }
        Some(Self {
            state: None,
            shared: self.shared.clone(),
            next_chunk: 0,
            trailers_done: false,
            first: false,
        })
    }

    /// Whether the body has grown past the cap (or failed), so it can no longer be replayed.
    pub fn is_capped(&self) -> bool {
        self.shared.capped.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Box<State<B>>>> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cap(&mut self, state: &mut State<B>) {
        self.shared.capped.store(true, Ordering::Release);
        state.chunks = Vec::new();
        state.buffered = 0;
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            *self.shared.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut state = match this.state.take() {
            Some(s) => s,
            None => {
                // Only the first body may go on after the cap: a copy would be truncated.
                if !this.first && this.is_capped() {
                    return Poll::Ready(Some(Err(ReplayError::Capped.into())));
                }
                match this.lock().take() {
                    Some(s) => s,
                    None => return Poll::Ready(Some(Err(ReplayError::InUse.into()))),
                }
            }
        };
        let polled = this.poll_state(&mut state, cx);
        this.state = Some(state);
        polled
    }

    fn is_end_stream(&self) -> bool {
        let check = |s: &State<B>| {
            self.next_chunk >= s.chunks.len()
                && s.rest.is_none()
                && (self.trailers_done || s.trailers.is_none())
        };
        match &self.state {
            Some(s) => check(s),
            None => self.lock().as_deref().is_some_and(check),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let remaining = |s: &State<B>| -> Option<u64> {
            if s.rest.is_some() {
                return None;
            }
            let left: usize = s.chunks.iter().skip(self.next_chunk).map(Bytes::len).sum();
            Some(left as u64)
        };
        let known = match &self.state {
            Some(s) => remaining(s),
            None => self.lock().as_deref().and_then(remaining),
        };
        match known {
            Some(n) => SizeHint::with_exact(n),
            None if self.next_chunk == 0 => self.shared.size_hint,
            None => SizeHint::default(),
        }
    }
}

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    fn poll_state(
        &mut self,
        state: &mut State<B>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = state.chunks.get(self.next_chunk) {
            self.next_chunk += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if let Some(rest) = state.rest.as_mut() {
            match ready!(Pin::new(rest).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        if !self.is_capped() {
                            if state.buffered + data.len() > self.shared.cap {
                                self.cap(state);
                            } else {
                                state.buffered += data.len();
                                state.chunks.push(data.clone());
                                self.next_chunk = state.chunks.len();
                            }
                        }
                    } else if let Some(trailers) = frame.trailers_ref() {
                        state.trailers = Some(trailers.clone());
                        self.trailers_done = true;
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Some(Err(e)) => {
                    // A body that failed mid-way cannot be replayed whole.
                    state.rest = None;
                    self.cap(state);
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => {
                    state.rest = None;
                    // Trailers, if any, were the last frame and this body yielded them.
                    self.trailers_done = true;
                    return Poll::Ready(None);
                }
            }
        }
        if !self.trailers_done {
            self.trailers_done = true;
            if let Some(trailers) = &state.trailers {
                return Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))));
            }
        }
        Poll::Ready(None)
    }
}

#[cfg(test)]
mod tests;
