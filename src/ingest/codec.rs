//! gRPC codecs that pass a message's bytes through undecoded on one side.
//!
//! The server decodes `ExportTraceServiceRequest` bytes itself ([`super::decode_export`]),
//! straight into the span model, instead of letting prost build owned structs
//! first; the load generator sends pre-encoded requests the same way.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::{ProstDecoder, ProstEncoder};

use super::otlp::collector::trace::v1::ExportTraceServiceResponse;

/// A codec made of an encoder and a decoder.
pub struct Pair<E, D>(PhantomData<fn() -> (E, D)>);

impl<E, D> Default for Pair<E, D> {
    fn default() -> Self {
        Pair(PhantomData)
    }
}

impl<E, D> Codec for Pair<E, D>
where
    E: Encoder<Error = Status> + Default + Send + 'static,
    D: Decoder<Error = Status> + Default + Send + 'static,
    E::Item: Send + 'static,
    D::Item: Send + 'static,
{
    type Encode = E::Item;
    type Decode = D::Item;
    type Encoder = E;
    type Decoder = D;

    fn encoder(&mut self) -> E {
        E::default()
    }

    fn decoder(&mut self) -> D {
        D::default()
    }
}

/// Writes message bytes as they are.
#[derive(Default)]
pub struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

/// Hands out message bytes undecoded (without a copy when they are contiguous).
#[derive(Default)]
pub struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The daemon's side of `TraceService/Export`: raw request, prost response.
pub type ServerCodec = Pair<ProstEncoder<ExportTraceServiceResponse>, BytesDecoder>;

/// An exporter's side: pre-encoded request, prost response.
pub type ClientCodec = Pair<BytesEncoder, ProstDecoder<ExportTraceServiceResponse>>;
