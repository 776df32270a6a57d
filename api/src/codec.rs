//! The gRPC codec of every Weft service: prost's, with buffers sized for Weft's messages.
//!
//! tonic starts each stream's encode and decode buffers at 8 KiB, and a stream keeps its
//! buffer for life: an encoded message shares the buffer's allocation, and the buffer reuses
//! it once the message is sent. A control plane serving 10,000 watch streams held about
//! 80 MiB of them (`weft-bench discovery`: 11 KiB of private memory per subscriber), for
//! updates of about 150 bytes. Here buffers start at [`INITIAL_BUFFER`] and grow to the
//! largest message a stream carries.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::BufferSettings;
use tonic_prost::{ProstDecoder, ProstEncoder};

/// A stream's first buffer: a delta of a few endpoints, or a certificate request, fits.
pub const INITIAL_BUFFER: usize = 512;

/// tonic's: an encode buffer past this is sent rather than grown by the next message.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// prost encoding with [`INITIAL_BUFFER`]-byte buffers; `codec_path` of the generated code.
#[derive(Debug, Clone, Copy)]
pub struct Codec<T, U>(PhantomData<fn() -> (T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD)
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
