//! `:authority` on the gateway's transports (issue 9): a raw HTTP/2 client
//! sends what gRPC clients send over a Unix socket — the socket path as
//! `:authority` — with HPACK's dynamic table and CONTINUATION frames, so the
//! test covers every encoding path, not just the one a given client uses.
//! The socket serves it; loopback TCP resets that stream with PROTOCOL_ERROR,
//! as before, and keeps serving valid requests on the same connection.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::common::TestEnv;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const PROTOCOL_ERROR: u32 = 0x1;
/// `grpc.health.v1.HealthCheckResponse{status: SERVING}` as a gRPC message.
const SERVING: &[u8] = &[0, 0, 0, 0, 2, 0x08, 0x01];

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// An HPACK string literal, not Huffman-coded (all ours are < 127 bytes).
fn hpack_string(s: &str) -> Vec<u8> {
    let len = u8::try_from(s.len()).unwrap();
    assert!(len < 127);
    let mut out = vec![len];
    out.extend(s.as_bytes());
    out
}

/// First request: every field a literal added to the dynamic table, in the
/// order :path, :authority, content-type, te.
fn indexing_block(authority: &str) -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http (static)
    block.push(0x44); // :path (static name 4), with incremental indexing
    block.extend(hpack_string("/grpc.health.v1.Health/Check"));
    block.push(0x41); // :authority (static name 1), with incremental indexing
    block.extend(hpack_string(authority));
    block.push(0x5f); // content-type (static name 31), with incremental indexing
    block.extend(hpack_string("application/grpc"));
    block.push(0x40); // new name, with incremental indexing
    block.extend(hpack_string("te"));
    block.extend(hpack_string("trailers"));
    block
}

/// Sends one header block as HEADERS + CONTINUATION, then an empty
/// HealthCheckRequest with END_STREAM.
fn request(stream: u32, block: &[u8]) -> Vec<u8> {
    let (first, rest) = block.split_at(block.len() / 2);
    let mut out = frame(HEADERS, 0, stream, first);
    out.extend(frame(CONTINUATION, END_HEADERS, stream, rest));
    out.extend(frame(DATA, END_STREAM, stream, &[0, 0, 0, 0, 0]));
    out
}

#[derive(Debug, Default)]
struct Seen {
    serving: Vec<u32>,
    reset: Vec<(u32, u32)>,
}

/// Reads frames until `done` says so (or 10 s pass), ACKing the server's
/// SETTINGS; returns which streams answered SERVING and which were reset.
async fn read_until(
    io: &mut (impl AsyncRead + AsyncWrite + Unpin),
    done: impl Fn(&Seen) -> bool,
) -> Seen {
    let mut seen = Seen::default();
    let read = async {
        while !done(&seen) {
            let mut head = [0u8; 9];
            io.read_exact(&mut head).await.expect("frame header");
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            io.read_exact(&mut payload).await.expect("frame payload");
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    io.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap()
                }
                DATA if payload == SERVING => seen.serving.push(stream),
                RST_STREAM => seen
                    .reset
                    .push((stream, u32::from_be_bytes(payload[..4].try_into().unwrap()))),
                GOAWAY => panic!("the gateway closed the connection (GOAWAY): {seen:?}"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| panic!("no answer within 10 s: {seen:?}"));
    seen
}

async fn start(io: &mut (impl AsyncWrite + Unpin)) {
    io.write_all(PREFACE).await.unwrap();
    io.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
}

#[tokio::test]
async fn local_authority_any_value_is_served_on_the_socket() {
    let env = TestEnv::new().await;
    let gw = env.start(env.config()).await;
    let mut io = tokio::net::UnixStream::connect(&gw.socket).await.unwrap();
    start(&mut io).await;
    // grpc-java's form: the raw path.
    let path = gw.socket.to_str().unwrap();
    io.write_all(&request(1, &indexing_block(path)))
        .await
        .unwrap();
    // Second request: every field from the dynamic table (the most recent
    // entry has index 62): :path 65, :authority 64, content-type 63, te 62.
    let indexed = [0x83, 0x86, 0x80 | 65, 0x80 | 64, 0x80 | 63, 0x80 | 62];
    io.write_all(&request(3, &indexed)).await.unwrap();
    // grpc-core's form: the percent-encoded path ('%' outside userinfo is no
    // valid authority either), a literal without indexing (static name 1).
    let mut block = vec![0x83, 0x86, 0x80 | 65, 0x01];
    block.extend(hpack_string(&path.replace('/', "%2F")));
    block.extend([0x80 | 63, 0x80 | 62]);
    io.write_all(&request(5, &block)).await.unwrap();
    let seen = read_until(&mut io, |s| s.serving.len() == 3 || !s.reset.is_empty()).await;
    assert!(seen.reset.is_empty(), "{seen:?}");
    assert_eq!(seen.serving, vec![1, 3, 5]);
}

#[tokio::test]
async fn local_authority_tcp_still_resets_an_invalid_one() {
    let env = TestEnv::new().await;
    let mut config = env.config();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    config.tcp = Some(addr);
    let _gw = env.start(config).await;
    let mut io = tokio::net::TcpStream::connect(addr).await.unwrap();
    start(&mut io).await;
    io.write_all(&request(
        1,
        &indexing_block("/run/identity-gateway/gateway.sock"),
    ))
    .await
    .unwrap();
    // Same connection, same HPACK state: a valid request still gets through.
    // :authority as a literal without indexing (static name 1).
    let mut block = vec![0x83, 0x86, 0x80 | 65, 0x01];
    block.extend(hpack_string("localhost"));
    block.extend([0x80 | 63, 0x80 | 62]);
    io.write_all(&request(3, &block)).await.unwrap();
    let seen = read_until(&mut io, |s| {
        s.serving.contains(&3) && s.reset.iter().any(|(id, _)| *id == 1)
    })
    .await;
    assert_eq!(
        seen.reset.iter().find(|(id, _)| *id == 1),
        Some(&(1, PROTOCOL_ERROR)),
        "{seen:?}"
    );
    assert!(!seen.serving.contains(&1), "{seen:?}");
}
