//! PRELOGIN (packet type 0x12): the client's option table and the server's
//! answer (version, encryption, FEDAUTHREQUIRED), as tiberius 0.13 sends and
//! expects them (wire contracts §8).

use bytes::{BufMut, BytesMut};

const VERSION: u8 = 0x00;
const ENCRYPTION: u8 = 0x01;
const INSTOPT: u8 = 0x02;
const THREADID: u8 = 0x03;
const MARS: u8 = 0x04;
const TRACEID: u8 = 0x05;
const FEDAUTHREQUIRED: u8 = 0x06;
const NONCEOPT: u8 = 0x07;
const TERMINATOR: u8 = 0xFF;

/// The ENCRYPTION option's values the fake answers.
pub const ENCRYPT_NOT_SUP: u8 = 0x02;
pub const ENCRYPT_REQ: u8 = 0x03;

/// What the client said in its PRELOGIN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientPrelogin {
    pub version: Option<[u8; 6]>,
    pub encryption: Option<u8>,
    pub instance: Option<String>,
    pub mars: Option<u8>,
    /// `Some(1)` when the client will authenticate with a federated token.
    pub fed_auth_required: Option<u8>,
    pub trace_id: bool,
}

/// Why a PRELOGIN payload cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed PRELOGIN: {0}")]
pub struct PreloginError(pub &'static str);

/// Parses the client's option table.
pub fn parse(payload: &[u8]) -> Result<ClientPrelogin, PreloginError> {
    let mut out = ClientPrelogin::default();
    let mut pos = 0;
    loop {
        let token = *payload
            .get(pos)
            .ok_or(PreloginError("option table not terminated"))?;
        if token == TERMINATOR {
            break;
        }
        let entry = payload
            .get(pos + 1..pos + 5)
            .ok_or(PreloginError("truncated option entry"))?;
        let offset = u16::from_be_bytes([entry[0], entry[1]]) as usize;
        let len = u16::from_be_bytes([entry[2], entry[3]]) as usize;
        let data = payload
            .get(offset..offset + len)
            .ok_or(PreloginError("option data outside the payload"))?;
        match token {
            VERSION => {
                out.version = Some(
                    data.try_into()
                        .map_err(|_| PreloginError("VERSION is not 6 bytes"))?,
                )
            }
            ENCRYPTION => out.encryption = data.first().copied(),
            INSTOPT => {
                let name = data.split(|b| *b == 0).next().unwrap_or_default();
                out.instance = Some(String::from_utf8_lossy(name).into_owned());
            }
            MARS => out.mars = data.first().copied(),
            FEDAUTHREQUIRED => out.fed_auth_required = data.first().copied(),
            TRACEID => out.trace_id = true,
            THREADID | NONCEOPT => {}
            _ => {} // MS-TDS: servers ignore options they do not know
        }
        pos += 5;
    }
    Ok(out)
}

/// Builds the server's answer: SQL Server 16 version, the given encryption
/// level, and FEDAUTHREQUIRED=1 when the client announced a federated token.
pub fn response(encryption: u8, fed_auth: bool) -> BytesMut {
    let mut options: Vec<(u8, Vec<u8>)> = vec![
        (VERSION, vec![0x10, 0x00, 0x07, 0xD0, 0x00, 0x00]),
        (ENCRYPTION, vec![encryption]),
        (INSTOPT, vec![0x00]),
        (THREADID, Vec::new()),
        (MARS, vec![0x00]),
    ];
    if fed_auth {
        options.push((FEDAUTHREQUIRED, vec![0x01]));
    }
    let table_len = options.len() * 5 + 1;
    let mut out = BytesMut::new();
    let mut offset = table_len;
    for (token, data) in &options {
        out.put_u8(*token);
        out.put_u16(offset as u16);
        out.put_u16(data.len() as u16);
        offset += data.len();
    }
    out.put_u8(TERMINATOR);
    for (_, data) in options {
        out.extend_from_slice(&data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verified server answer of the wire contracts (no TLS, fed-auth echo).
    const VERIFIED: [u8; 41] = [
        0x00, 0x00, 0x1F, 0x00, 0x06, 0x01, 0x00, 0x25, 0x00, 0x01, 0x02, 0x00, 0x26, 0x00, 0x01,
        0x03, 0x00, 0x27, 0x00, 0x00, 0x04, 0x00, 0x27, 0x00, 0x01, 0x06, 0x00, 0x28, 0x00, 0x01,
        0xFF, 0x10, 0x00, 0x07, 0xD0, 0x00, 0x00, 0x02, 0x00, 0x00, 0x01,
    ];

    #[test]
    fn response_matches_the_verified_bytes() {
        assert_eq!(&response(ENCRYPT_NOT_SUP, true)[..], &VERIFIED[..]);
    }

    #[test]
    fn tiberius_style_request_is_parsed() {
        // VERSION, ENCRYPTION=Required, INSTOPT (lone 0), THREADID, MARS, FEDAUTHREQUIRED.
        let mut p = vec![
            0x00, 0x00, 0x1F, 0x00, 0x06, 0x01, 0x00, 0x25, 0x00, 0x01, 0x02, 0x00, 0x26, 0x00,
            0x01, 0x03, 0x00, 0x27, 0x00, 0x04, 0x04, 0x00, 0x2B, 0x00, 0x01, 0x06, 0x00, 0x2C,
            0x00, 0x01, 0xFF,
        ];
        p.extend_from_slice(&[0x00, 0x00, 0x0D, 0x00, 0x00, 0x00]);
        p.push(ENCRYPT_REQ);
        p.push(0x00);
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.push(0x00);
        p.push(0x01);
        let parsed = parse(&p).unwrap();
        assert_eq!(parsed.version, Some([0, 0, 0x0D, 0, 0, 0]));
        assert_eq!(parsed.encryption, Some(ENCRYPT_REQ));
        assert_eq!(parsed.instance.as_deref(), Some(""));
        assert_eq!(parsed.fed_auth_required, Some(1));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[0x00, 0x00]).is_err());
        assert!(parse(&[0x01, 0x00, 0xF0, 0x00, 0x01, 0xFF]).is_err());
        assert!(parse(&[0x00, 0x00, 0x06, 0x00, 0x02, 0xFF, 1, 2]).is_err());
    }
}
