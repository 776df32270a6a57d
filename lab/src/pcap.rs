//! Reading what `tcpdump -w` wrote: the classic pcap file format (Ethernet link type), IPv4 and
//! IPv6 TCP segments, streams reassembled per direction, TLS records walked from a stream's
//! first byte, and UDP datagrams (the capture's end marker). Pure: bytes in, facts out.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

/// The pcap link type of Ethernet.
const LINKTYPE_ETHERNET: u32 = 1;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_SYN: u8 = 0x02;

/// Why a capture file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcapError {
    #[error("not a pcap file (magic {0:#010x})")]
    Magic(u32),
    #[error("link type {0} is not Ethernet")]
    LinkType(u32),
    #[error("the file ends inside a header")]
    Truncated,
}

/// One TCP segment seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub flags: u8,
    pub payload: Vec<u8>,
}

impl Segment {
    /// Whether this is a SYN (the stream's sequence numbers start one past it).
    pub fn is_syn(&self) -> bool {
        self.flags & TCP_SYN != 0
    }
}

/// One UDP datagram seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// The TCP segments of a capture, in capture order. Non-TCP packets are skipped; a packet cut
/// short by the snap length keeps what was captured.
pub fn tcp_segments(file: &[u8]) -> Result<Vec<Segment>, PcapError> {
    Ok(frames(file)?.into_iter().filter_map(ethernet_tcp).collect())
}

/// The UDP datagrams of a capture, in capture order; as [`tcp_segments`] for TCP.
pub fn udp_datagrams(file: &[u8]) -> Result<Vec<Datagram>, PcapError> {
    Ok(frames(file)?.into_iter().filter_map(ethernet_udp).collect())
}

/// The captured bytes of each packet record, in file order.
fn frames(file: &[u8]) -> Result<Vec<&[u8]>, PcapError> {
    let header = file.get(..24).ok_or(PcapError::Truncated)?;
    let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        other => return Err(PcapError::Magic(other)),
    };
    let u32_at = |b: &[u8], at: usize| -> Option<u32> {
        let b: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let link = u32_at(header, 20).ok_or(PcapError::Truncated)? & 0x0fff_ffff;
    if link != LINKTYPE_ETHERNET {
        return Err(PcapError::LinkType(link));
    }
    let mut frames = Vec::new();
    let mut at = 24;
    while at < file.len() {
        let rec = file.get(at..at + 16).ok_or(PcapError::Truncated)?;
        let incl = u32_at(rec, 8).ok_or(PcapError::Truncated)? as usize;
        let data = file
            .get(at + 16..at + 16 + incl)
            .ok_or(PcapError::Truncated)?;
        at += 16 + incl;
        frames.push(data);
    }
    Ok(frames)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// An Ethernet frame's IP source, destination, protocol and IP payload.
fn ethernet_ip(frame: &[u8]) -> Option<(IpAddr, IpAddr, u8, &[u8])> {
    let mut ethertype = be16(frame, 12)?;
    let mut at = 14;
    if ethertype == ETHERTYPE_VLAN {
        ethertype = be16(frame, 16)?;
        at = 18;
    }
    let ip = frame.get(at..)?;
    match ethertype {
        ETHERTYPE_IPV4 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let total = usize::from(be16(ip, 2)?);
            if ihl < 20 {
                return None;
            }
            let src = IpAddr::from(Ipv4Addr::from(be32(ip, 12)?));
            let dst = IpAddr::from(Ipv4Addr::from(be32(ip, 16)?));
            // The IP length, not the frame's: Ethernet pads short frames.
            Some((src, dst, *ip.get(9)?, ip.get(ihl..total.min(ip.len()))?))
        }
        ETHERTYPE_IPV6 => {
            // No extension headers: the lab's traffic has none.
            let len = usize::from(be16(ip, 4)?);
            let addr = |at: usize| -> Option<IpAddr> {
                let b: [u8; 16] = ip.get(at..at + 16)?.try_into().ok()?;
                Some(IpAddr::from(Ipv6Addr::from(b)))
            };
            let payload = ip.get(40..(40 + len).min(ip.len()))?;
            Some((addr(8)?, addr(24)?, *ip.get(6)?, payload))
        }
        _ => None,
    }
}

fn ethernet_tcp(frame: &[u8]) -> Option<Segment> {
    let (src, dst, proto, tcp) = ethernet_ip(frame)?;
    if proto != PROTO_TCP {
        return None;
    }
    let offset = usize::from(tcp.get(12)? >> 4) * 4;
    Some(Segment {
        src: SocketAddr::new(src, be16(tcp, 0)?),
        dst: SocketAddr::new(dst, be16(tcp, 2)?),
        seq: be32(tcp, 4)?,
        flags: *tcp.get(13)?,
        payload: tcp.get(offset..)?.to_vec(),
    })
}

fn ethernet_udp(frame: &[u8]) -> Option<Datagram> {
    let (src, dst, proto, udp) = ethernet_ip(frame)?;
    if proto != PROTO_UDP {
        return None;
    }
    // The UDP length, not what follows: the IP payload may be cut short by the snap length.
    let len = usize::from(be16(udp, 4)?);
    Some(Datagram {
        src: SocketAddr::new(src, be16(udp, 0)?),
        dst: SocketAddr::new(dst, be16(udp, 2)?),
        payload: udp.get(8..len.min(udp.len()))?.to_vec(),
    })
}

/// One direction of a TCP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Whether the capture saw the SYN, so `bytes` starts at the stream's first byte.
    pub from_start: bool,
    /// The payload in sequence order, up to the first gap; retransmissions counted once.
    pub bytes: Vec<u8>,
}

/// Reassembles `segments` into one [`Stream`] per direction of each connection.
pub fn streams(segments: &[Segment]) -> Vec<Stream> {
    struct Acc {
        base: Option<u32>,
        first_seq: u32,
        data: BTreeMap<u32, Vec<u8>>,
    }
    let mut flows: BTreeMap<(SocketAddr, SocketAddr), Acc> = BTreeMap::new();
    for seg in segments {
        let acc = flows.entry((seg.src, seg.dst)).or_insert(Acc {
            base: None,
            first_seq: seg.seq,
            data: BTreeMap::new(),
        });
        if seg.is_syn() {
            acc.base = Some(seg.seq.wrapping_add(1));
        }
        if !seg.payload.is_empty() {
            // Offsets relative to the first segment seen, so wrapping sequence numbers sort.
            let rel = seg.seq.wrapping_sub(acc.first_seq);
            let slot = acc.data.entry(rel).or_default();
            if seg.payload.len() > slot.len() {
                *slot = seg.payload.clone();
            }
        }
    }
    flows
        .into_iter()
        .map(|((src, dst), acc)| {
            let start = match acc.base {
                Some(base) => base.wrapping_sub(acc.first_seq),
                None => acc.data.keys().next().copied().unwrap_or(0),
            };
            let mut bytes = Vec::new();
            let mut next = start;
            for (&rel, data) in &acc.data {
                let end = rel.wrapping_add(data.len() as u32);
                if rel > next {
                    break; // a gap: stop at what is contiguous
                }
                if end > next {
                    bytes.extend_from_slice(&data[(next - rel) as usize..]);
                    next = end;
                }
            }
            Stream {
                src,
                dst,
                from_start: acc.base.is_some(),
                bytes,
            }
        })
        .collect()
}

/// A TLS record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsRecord {
    /// 0x14 change_cipher_spec, 0x15 alert, 0x16 handshake, 0x17 application_data.
    pub content_type: u8,
    /// `[0x03, 0x01]` (a first ClientHello) or `[0x03, 0x03]`.
    pub version: [u8; 2],
    pub len: usize,
}

/// Walks `bytes` as a sequence of TLS records from its first byte: the records, and the
/// offset where the walk stopped if a header was not a TLS record header (a record cut short
/// at the end of a capture is fine).
pub fn tls_records(bytes: &[u8]) -> (Vec<TlsRecord>, Option<usize>) {
    let mut records = Vec::new();
    let mut at = 0;
    while at + 5 <= bytes.len() {
        let h = &bytes[at..at + 5];
        let record = TlsRecord {
            content_type: h[0],
            version: [h[1], h[2]],
            len: usize::from(u16::from_be_bytes([h[3], h[4]])),
        };
        if !is_tls_header(&record) {
            return (records, Some(at));
        }
        records.push(record);
        at += 5 + record.len;
    }
    (records, None)
}

/// Whether a record header is one TLS 1.2/1.3 could send (RFC 8446 section 5.1).
pub fn is_tls_header(r: &TlsRecord) -> bool {
    (0x14..=0x17).contains(&r.content_type)
        && r.version[0] == 0x03
        && (r.version[1] == 0x01 || r.version[1] == 0x03)
        && r.len <= (1 << 14) + 256
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        seq: u32,
        flags: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&sport.to_be_bytes());
        tcp.extend_from_slice(&dport.to_be_bytes());
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0, 0, 0, 0, 0, 0]);
        tcp.extend_from_slice(payload);
        ipv4_frame(src, dst, PROTO_TCP, &tcp)
    }

    fn ipv4_frame(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let total = 20 + payload.len();
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        f.extend_from_slice(&ip);
        f.extend_from_slice(payload);
        f
    }

    fn file(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [
            0xa1b2_c3d4u32,
            0x0004_0002,
            0,
            0,
            262_144,
            LINKTYPE_ETHERNET,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        // The version is two u16s: 2, 4.
        out[4..8].copy_from_slice(&[2, 0, 4, 0]);
        for f in frames {
            for v in [0u32, 0, f.len() as u32, f.len() as u32] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(f);
        }
        out
    }

    #[test]
    fn reassembles_out_of_order_and_retransmitted_segments_and_walks_tls() {
        let (a, b) = ([198, 18, 0, 2], [198, 18, 0, 3]);
        let hello = [0x16, 0x03, 0x01, 0x00, 0x02, 0xaa, 0xbb];
        let data = [0x17, 0x03, 0x03, 0x00, 0x01, 0xcc];
        let pcap = file(&[
            frame(a, b, 40000, 15143, u32::MAX, TCP_SYN, &[]),
            frame(a, b, 40000, 15143, hello.len() as u32, 0x18, &data),
            frame(a, b, 40000, 15143, 0, 0x18, &hello),
            frame(a, b, 40000, 15143, 0, 0x18, &hello),
            frame(b, a, 15143, 40000, 7, 0x18, b"GET / HTTP/1.1\r\n"),
        ]);
        let segs = tcp_segments(&pcap).expect("parses");
        assert_eq!(segs.len(), 5);
        assert_eq!(segs[0].dst, SocketAddr::from((b, 15143)));
        let streams = streams(&segs);
        let fwd = streams
            .iter()
            .find(|s| s.src.port() == 40000)
            .expect("a->b");
        assert!(fwd.from_start);
        assert_eq!(fwd.bytes, [&hello[..], &data[..]].concat());
        let (records, stop) = tls_records(&fwd.bytes);
        assert_eq!(stop, None);
        assert_eq!(
            records.iter().map(|r| r.content_type).collect::<Vec<_>>(),
            [0x16, 0x17]
        );
        let back = streams
            .iter()
            .find(|s| s.src.port() == 15143)
            .expect("b->a");
        assert!(!back.from_start);
        assert_eq!(tls_records(&back.bytes).1, Some(0));
        assert!(contains(&back.bytes, b"HTTP/1.1"));
    }

    #[test]
    fn finds_udp_datagrams_among_tcp_segments() {
        let (a, bcast) = ([198, 18, 0, 1], [198, 18, 0, 255]);
        let mut udp = Vec::new();
        for v in [40001u16, 9, 8 + 6, 0] {
            udp.extend_from_slice(&v.to_be_bytes());
        }
        udp.extend_from_slice(b"marker");
        let mut padded = ipv4_frame(a, bcast, PROTO_UDP, &udp);
        // Ethernet pads a short frame: the padding is not payload.
        padded.extend_from_slice(&[0; 6]);
        let pcap = file(&[
            frame(a, [198, 18, 0, 2], 40000, 8080, 1, 0x18, b"GET /"),
            padded,
        ]);
        let datagrams = udp_datagrams(&pcap).expect("parses");
        assert_eq!(
            datagrams,
            [Datagram {
                src: SocketAddr::from((a, 40001)),
                dst: SocketAddr::from((bcast, 9)),
                payload: b"marker".to_vec(),
            }]
        );
        assert_eq!(tcp_segments(&pcap).expect("parses").len(), 1);
    }

    #[test]
    fn refuses_other_files() {
        assert_eq!(tcp_segments(b"short"), Err(PcapError::Truncated));
        assert_eq!(tcp_segments(&[0u8; 24]), Err(PcapError::Magic(0)));
    }
}
