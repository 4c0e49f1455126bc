//! TDS packet framing: the 8-byte header, reading whole messages (packets
//! concatenated until the one with END-OF-MESSAGE), and cutting an outgoing
//! message into packets of the negotiated size.

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Header length of every TDS packet.
pub const HEADER_LEN: usize = 8;
/// Status bit: last packet of the message.
pub const STATUS_EOM: u8 = 0x01;
/// Status bit (client → server): ignore this message (a cancelled send).
pub const STATUS_IGNORE: u8 = 0x02;

/// Packet types this fake knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    SqlBatch,
    Rpc,
    TabularResult,
    Attention,
    TransactionManager,
    Login7,
    PreLogin,
    Other(u8),
}

impl PacketType {
    pub fn from_byte(b: u8) -> Self {
        match b {
            0x01 => Self::SqlBatch,
            0x03 => Self::Rpc,
            0x04 => Self::TabularResult,
            0x06 => Self::Attention,
            0x0E => Self::TransactionManager,
            0x10 => Self::Login7,
            0x12 => Self::PreLogin,
            other => Self::Other(other),
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            Self::SqlBatch => 0x01,
            Self::Rpc => 0x03,
            Self::TabularResult => 0x04,
            Self::Attention => 0x06,
            Self::TransactionManager => 0x0E,
            Self::Login7 => 0x10,
            Self::PreLogin => 0x12,
            Self::Other(b) => b,
        }
    }
}

/// A decoded packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    pub ty: PacketType,
    pub status: u8,
    /// Whole packet length, header included.
    pub length: u16,
    pub spid: u16,
    pub packet_id: u8,
}

impl PacketHeader {
    /// Parses a header, refusing lengths shorter than the header itself.
    pub fn parse(raw: &[u8; HEADER_LEN]) -> Result<Self, FramingError> {
        let length = u16::from_be_bytes([raw[2], raw[3]]);
        if (length as usize) < HEADER_LEN {
            return Err(FramingError::BadLength(length));
        }
        Ok(Self {
            ty: PacketType::from_byte(raw[0]),
            status: raw[1],
            length,
            spid: u16::from_be_bytes([raw[4], raw[5]]),
            packet_id: raw[6],
        })
    }

    pub fn is_last(&self) -> bool {
        self.status & STATUS_EOM != 0
    }

    pub fn payload_len(&self) -> usize {
        self.length as usize - HEADER_LEN
    }
}

/// Why incoming bytes are not a TDS message.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("packet length {0} is shorter than the 8-byte header")]
    BadLength(u16),
    #[error("message is larger than {0} bytes")]
    TooLarge(usize),
    #[error("packet of type {got:#04x} in the middle of a message of type {expected:#04x}")]
    MixedTypes { expected: u8, got: u8 },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One whole client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub ty: PacketType,
    /// The status of the last packet (`STATUS_IGNORE` marks a cancelled send).
    pub status: u8,
    pub payload: Vec<u8>,
}

/// Reads one packet. `Ok(None)` on a clean end of stream before a header.
pub async fn read_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    payload: &mut Vec<u8>,
) -> Result<Option<PacketHeader>, FramingError> {
    let mut raw = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = reader.read(&mut raw[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(FramingError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        filled += n;
    }
    let header = PacketHeader::parse(&raw)?;
    let start = payload.len();
    payload.resize(start + header.payload_len(), 0);
    reader.read_exact(&mut payload[start..]).await?;
    Ok(Some(header))
}

/// Reads packets until END-OF-MESSAGE, refusing messages above `max_len`.
/// `Ok(None)` on a clean end of stream between messages.
pub async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_len: usize,
) -> Result<Option<Message>, FramingError> {
    let mut payload = Vec::new();
    let mut ty = None;
    loop {
        let Some(header) = read_packet(reader, &mut payload).await? else {
            return match ty {
                None => Ok(None),
                Some(_) => Err(FramingError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            };
        };
        match ty {
            None => ty = Some(header.ty),
            Some(expected) if expected != header.ty => {
                return Err(FramingError::MixedTypes {
                    expected: expected.byte(),
                    got: header.ty.byte(),
                })
            }
            Some(_) => {}
        }
        if payload.len() > max_len {
            return Err(FramingError::TooLarge(max_len));
        }
        if header.is_last() {
            return Ok(Some(Message {
                ty: header.ty,
                status: header.status,
                payload,
            }));
        }
    }
}

/// Writes `header` for a packet of `payload_len` bytes into `out`.
pub fn put_header(out: &mut BytesMut, ty: PacketType, last: bool, payload_len: usize, id: u8) {
    out.put_u8(ty.byte());
    out.put_u8(if last { STATUS_EOM } else { 0 });
    out.put_u16((payload_len + HEADER_LEN) as u16);
    out.put_u16(0x0033); // SPID, any non-zero value
    out.put_u8(id);
    out.put_u8(0);
}

/// Frames a whole message into packets of at most `packet_size` bytes, the
/// last one carrying END-OF-MESSAGE.
pub fn frame_message(ty: PacketType, payload: &[u8], packet_size: usize) -> BytesMut {
    let mut framer = Framer::new(ty, packet_size);
    framer.push(payload);
    framer.finish()
}

/// Cuts an outgoing message into packets as its bytes are produced, so a
/// large result set streams out without being held whole.
#[derive(Debug)]
pub struct Framer {
    ty: PacketType,
    chunk: usize,
    pending: BytesMut,
    framed: BytesMut,
    packet_id: u8,
}

impl Framer {
    pub fn new(ty: PacketType, packet_size: usize) -> Self {
        let packet_size = packet_size.clamp(512, 32767);
        Self {
            ty,
            chunk: packet_size - HEADER_LEN,
            pending: BytesMut::with_capacity(packet_size),
            framed: BytesMut::new(),
            packet_id: 1,
        }
    }

    /// Token bytes not yet framed.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.pending
    }

    /// Appends bytes to the message.
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        self.cut_full_packets();
    }

    /// Frames every full packet sitting in the buffer (call after writing
    /// through [`buffer`](Self::buffer)).
    pub fn cut_full_packets(&mut self) {
        while self.pending.len() > self.chunk {
            let body = self.pending.split_to(self.chunk);
            put_header(&mut self.framed, self.ty, false, body.len(), self.packet_id);
            self.framed.extend_from_slice(&body);
            self.packet_id = self.packet_id.wrapping_add(1);
        }
    }

    /// Complete packets ready to send (not the message's end).
    pub fn framed_len(&self) -> usize {
        self.framed.len()
    }

    /// Takes the complete packets framed so far.
    pub fn take_framed(&mut self) -> BytesMut {
        self.framed.split()
    }

    /// Ends the message: frames what is left as the last packet (EOM) and
    /// returns every packet not taken yet.
    pub fn finish(mut self) -> BytesMut {
        self.cut_full_packets();
        let body = self.pending.split();
        put_header(&mut self.framed, self.ty, true, body.len(), self.packet_id);
        self.framed.extend_from_slice(&body);
        self.framed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(mut bytes: &[u8]) -> Vec<(PacketHeader, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let raw: [u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().unwrap();
            let header = PacketHeader::parse(&raw).unwrap();
            let len = header.length as usize;
            out.push((header, bytes[HEADER_LEN..len].to_vec()));
            bytes = &bytes[len..];
        }
        out
    }

    #[test]
    fn a_message_is_cut_into_packets_with_eom_on_the_last() {
        let payload: Vec<u8> = (0..1200u32).map(|i| i as u8).collect();
        let framed = frame_message(PacketType::TabularResult, &payload, 512);
        let parts = packets(&framed);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].1.len(), 504);
        assert_eq!(parts[1].1.len(), 504);
        assert_eq!(parts[2].1.len(), 192);
        assert!(!parts[0].0.is_last() && !parts[1].0.is_last() && parts[2].0.is_last());
        assert_eq!(parts[0].0.ty, PacketType::TabularResult);
        assert_eq!(
            parts.iter().map(|p| p.0.packet_id).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let joined: Vec<u8> = parts.into_iter().flat_map(|p| p.1).collect();
        assert_eq!(joined, payload);
    }

    #[test]
    fn an_empty_message_is_one_header_only_packet() {
        let framed = frame_message(PacketType::TabularResult, &[], 4096);
        assert_eq!(
            &framed[..],
            &[0x04, 0x01, 0x00, 0x08, 0x00, 0x33, 0x01, 0x00]
        );
    }

    #[tokio::test]
    async fn messages_spanning_packets_are_joined_until_eom() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = frame_message(PacketType::Login7, &payload, 4096).to_vec();
        wire.extend_from_slice(&frame_message(PacketType::SqlBatch, b"ab", 4096));
        let mut reader = &wire[..];
        let first = read_message(&mut reader, 1 << 20).await.unwrap().unwrap();
        assert_eq!(first.ty, PacketType::Login7);
        assert_eq!(first.payload, payload);
        let second = read_message(&mut reader, 1 << 20).await.unwrap().unwrap();
        assert_eq!(second.payload, b"ab");
        assert!(read_message(&mut reader, 1 << 20).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn bad_lengths_truncation_and_oversize_are_errors() {
        let short = [0x01u8, 0x01, 0x00, 0x04, 0, 0, 1, 0];
        assert!(matches!(
            read_message(&mut &short[..], 100).await,
            Err(FramingError::BadLength(4))
        ));
        let truncated = [0x01u8, 0x01, 0x00, 0x10, 0, 0, 1, 0, 1, 2];
        assert!(read_message(&mut &truncated[..], 100).await.is_err());
        let big = frame_message(PacketType::SqlBatch, &[0u8; 3000], 512);
        assert!(matches!(
            read_message(&mut &big[..], 1000).await,
            Err(FramingError::TooLarge(1000))
        ));
        let mut mixed = frame_message(PacketType::SqlBatch, &[0u8; 600], 512).to_vec();
        mixed[8 + 504] = 0x03; // second packet claims to be an RPC
        assert!(matches!(
            read_message(&mut &mixed[..], 10_000).await,
            Err(FramingError::MixedTypes { .. })
        ));
    }
}
