use std::{collections::VecDeque, convert::Infallible};

use http::HeaderValue;
use http_body_util::BodyExt;

use super::*;

/// A body of fixed frames, each yielded by its own poll.
#[derive(Debug)]
struct Frames {
    frames: VecDeque<Frame<Bytes>>,
    hint: SizeHint,
}

impl Frames {
    fn new(chunks: &[&[u8]], trailers: Option<HeaderMap>) -> Self {
        let mut frames: VecDeque<_> = chunks
            .iter()
            .map(|c| Frame::data(Bytes::copy_from_slice(c)))
            .collect();
        if let Some(t) = trailers {
            frames.push_back(Frame::trailers(t));
        }
        Self {
            frames,
            hint: SizeHint::default(),
        }
    }

    fn with_exact(mut self, n: u64) -> Self {
        self.hint = SizeHint::with_exact(n);
        self
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.frames.pop_front().map(Ok))
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

fn trailers() -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from_static("0"));
    t
}

/// Reads a body to its end: its data, concatenated, and its trailers.
async fn read<B>(body: B) -> (Vec<u8>, Option<HeaderMap>)
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned();
    (collected.to_bytes().to_vec(), trailers)
}

/// Reads `n` frames.
async fn read_frames(body: &mut ReplayBody<Frames>, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n {
        let frame = body.frame().await.expect("a frame").expect("no error");
        out.extend_from_slice(frame.data_ref().expect("data"));
    }
    out
}

#[tokio::test]
async fn a_copy_replays_every_frame_and_the_trailers() {
    let body = ReplayBody::new(
        Frames::new(&[b"hello ", b"replayed ", b"world"], Some(trailers())),
        DEFAULT_REPLAY_CAP,
    )
    .expect("fits");
    let copy = body.try_clone().expect("not capped");
    let again = body.try_clone().expect("not capped");
    let first = read(body).await;
    assert_eq!(first.0, b"hello replayed world");
    assert_eq!(first.1, Some(trailers()));
    assert_eq!(copy.size_hint().exact(), Some(20), "exact once all is held");
    assert_eq!(read(copy).await, first);
    assert_eq!(read(again).await, first, "any number of times");
}

#[tokio::test]
async fn a_copy_goes_on_where_the_last_body_stopped() {
    let mut body = ReplayBody::new(Frames::new(&[b"ab", b"cd", b"ef"], None), 1024).expect("fits");
    let copy = body.try_clone().expect("not capped");
    assert_eq!(read_frames(&mut body, 1).await, b"ab");
    // The try was abandoned after one frame (the upstream answered early, say).
    drop(body);
    let (data, trailers) = read(copy).await;
    assert_eq!(data, b"abcdef");
    assert_eq!(trailers, None);
}

#[tokio::test]
async fn past_the_cap_the_body_streams_on_but_is_not_replayed() {
    let body = ReplayBody::new(Frames::new(&[b"0123", b"4567", b"89"], Some(trailers())), 6)
        .expect("the hint does not say");
    let early_copy = body.try_clone().expect("not capped yet");
    let (data, t) = read(body).await;
    assert_eq!(data, b"0123456789", "nothing is lost past the cap");
    assert_eq!(t, Some(trailers()));
    assert!(early_copy.is_capped());
    assert!(early_copy.try_clone().is_none(), "no new copies");
    let err = early_copy
        .collect()
        .await
        .expect_err("a truncated replay must fail");
    assert_eq!(
        err.downcast_ref::<ReplayError>(),
        Some(&ReplayError::Capped),
        "{err}"
    );
}

#[test]
fn a_body_known_to_be_too_large_is_handed_back() {
    let body = Frames::new(&[b"0123456789"], None).with_exact(10);
    let back = ReplayBody::new(body, 9).expect_err("too large");
    assert_eq!(back.frames.len(), 1, "untouched");
    let fits = ReplayBody::new(Frames::new(&[b"0123456789"], None).with_exact(10), 10)
        .expect("fits exactly");
    assert_eq!(
        fits.size_hint().exact(),
        Some(10),
        "a fresh copy keeps the hint"
    );
}

#[tokio::test]
async fn two_copies_cannot_read_at_once() {
    let mut body = ReplayBody::new(Frames::new(&[b"ab", b"cd"], None), 1024).expect("fits");
    let mut copy = body.try_clone().expect("not capped");
    assert_eq!(read_frames(&mut body, 1).await, b"ab");
    let err = copy.frame().await.expect("a frame").expect_err("in use");
    assert_eq!(err.downcast_ref::<ReplayError>(), Some(&ReplayError::InUse));
    drop(body);
    assert_eq!(
        read_frames(&mut copy, 2).await,
        b"abcd",
        "free again once the first is dropped"
    );
}

#[tokio::test]
async fn an_empty_body_ends_at_once_in_every_copy() {
    let body = ReplayBody::new(Frames::new(&[], None), 1024).expect("fits");
    let copy = body.try_clone().expect("not capped");
    assert!(!body.is_end_stream(), "not known before the source is read");
    assert_eq!(read(body).await, (Vec::new(), None));
    assert!(copy.is_end_stream());
    assert_eq!(copy.size_hint().exact(), Some(0));
    assert_eq!(read(copy).await, (Vec::new(), None));
}

/// However the client's bytes are split into frames and wherever a try stops, every copy
/// yields the same bytes as the body itself (a bounded, deterministic sweep).
#[tokio::test]
async fn copies_equal_the_original_for_every_split_and_stop() {
    let payload: Vec<u8> = (0..40u8).collect();
    let mut cases = 0;
    for frame_len in 1..=9 {
        let chunks: Vec<&[u8]> = payload.chunks(frame_len).collect();
        for stop in 0..=chunks.len() {
            for cap in [16, 40, 64] {
                let mut body =
                    ReplayBody::new(Frames::new(&chunks, Some(trailers())), cap).expect("no hint");
                let copy = body.try_clone().expect("fresh");
                let head = read_frames(&mut body, stop).await;
                assert_eq!(head, payload[..head.len()], "{frame_len} {stop} {cap}");
                drop(body);
                let replayed = copy.collect().await;
                if cap >= payload.len() {
                    let replayed = replayed.expect("fits the cap");
                    assert_eq!(replayed.trailers(), Some(&trailers()));
                    assert_eq!(replayed.to_bytes().as_ref(), payload.as_slice());
                } else if head.len() > cap {
                    assert!(replayed.is_err(), "capped before the copy started");
                } else {
                    // The copy itself may cross the cap; it streams on, but no later copy works.
                    let replayed = replayed.expect("the copy reads on past the cap");
                    assert_eq!(replayed.to_bytes().as_ref(), payload.as_slice());
                }
                cases += 1;
            }
        }
    }
    assert!(cases > 100, "{cases}");
}
