//! Encoding of the server → client tokens the fake sends: ENVCHANGE,
//! INFO/ERROR, LOGINACK, FEATUREEXTACK, COLMETADATA, ROW/NBCROW,
//! DONE/DONEPROC/DONEINPROC and RETURNSTATUS (wire contracts §8).

use bytes::{BufMut, BytesMut};

use super::types::ColType;

pub const COLMETADATA: u8 = 0x81;
pub const ERROR: u8 = 0xAA;
pub const INFO: u8 = 0xAB;
pub const LOGINACK: u8 = 0xAD;
pub const FEATUREEXTACK: u8 = 0xAE;
pub const ROW: u8 = 0xD1;
pub const NBCROW: u8 = 0xD2;
pub const ENVCHANGE: u8 = 0xE3;
pub const DONE: u8 = 0xFD;
pub const DONEPROC: u8 = 0xFE;
pub const DONEINPROC: u8 = 0xFF;
pub const RETURNSTATUS: u8 = 0x79;

/// DONE status bits.
pub const DONE_FINAL: u16 = 0x0000;
pub const DONE_MORE: u16 = 0x0001;
pub const DONE_ERROR: u16 = 0x0002;
pub const DONE_COUNT: u16 = 0x0010;
pub const DONE_ATTN: u16 = 0x0020;

/// CurCmd values of DONE tokens (the statement kind).
pub const CMD_SELECT: u16 = 0x00C1;
pub const CMD_INSERT: u16 = 0x00C3;
pub const CMD_DELETE: u16 = 0x00C4;
pub const CMD_UPDATE: u16 = 0x00C5;
pub const CMD_EXECUTE: u16 = 0x00E0;
pub const CMD_OTHER: u16 = 0x0000;

/// SQL_Latin1_General_CP1_CI_AS.
pub const COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

/// B_VARCHAR: a one-byte character count, then UTF-16LE (cut at 255 chars).
pub fn put_b_varchar(out: &mut BytesMut, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(255).collect();
    out.put_u8(units.len() as u8);
    for unit in units {
        out.put_u16_le(unit);
    }
}

/// US_VARCHAR: a two-byte character count, then UTF-16LE.
pub fn put_us_varchar(out: &mut BytesMut, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(u16::MAX as usize).collect();
    out.put_u16_le(units.len() as u16);
    for unit in units {
        out.put_u16_le(unit);
    }
}

/// Writes `token`, a u16 length placeholder, the body `f` writes, then
/// patches the length.
fn with_u16_len(out: &mut BytesMut, token: u8, f: impl FnOnce(&mut BytesMut)) {
    out.put_u8(token);
    let at = out.len();
    out.put_u16_le(0);
    f(out);
    let len = (out.len() - at - 2) as u16;
    out[at..at + 2].copy_from_slice(&len.to_le_bytes());
}

/// ENVCHANGE type 1: the current database.
pub fn env_database(out: &mut BytesMut, new: &str, old: &str) {
    with_u16_len(out, ENVCHANGE, |out| {
        out.put_u8(1);
        put_b_varchar(out, new);
        put_b_varchar(out, old);
    });
}

/// ENVCHANGE type 7: the SQL collation.
pub fn env_collation(out: &mut BytesMut) {
    with_u16_len(out, ENVCHANGE, |out| {
        out.put_u8(7);
        out.put_u8(5);
        out.extend_from_slice(&COLLATION);
        out.put_u8(0);
    });
}

/// ENVCHANGE type 4: the packet size.
pub fn env_packet_size(out: &mut BytesMut, size: u32) {
    with_u16_len(out, ENVCHANGE, |out| {
        out.put_u8(4);
        put_b_varchar(out, &size.to_string());
        put_b_varchar(out, &size.to_string());
    });
}

/// ENVCHANGE type 20: log in at `host:port` instead (Azure SQL's redirect
/// connection policy).
pub fn env_routing(out: &mut BytesMut, host: &str, port: u16) {
    with_u16_len(out, ENVCHANGE, |out| {
        out.put_u8(20);
        let at = out.len();
        out.put_u16_le(0);
        out.put_u8(0); // TCP
        out.put_u16_le(port);
        put_us_varchar(out, host);
        let len = (out.len() - at - 2) as u16;
        out[at..at + 2].copy_from_slice(&len.to_le_bytes());
        out.put_u16_le(0); // no old value
    });
}

/// A server message (ERROR or INFO token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMessage {
    pub number: i32,
    pub state: u8,
    pub class: u8,
    pub text: String,
    pub procedure: String,
    pub line: u32,
}

impl ServerMessage {
    /// An error of severity 16 (user-correctable), state 1.
    pub fn error(number: i32, text: impl Into<String>) -> Self {
        Self {
            number,
            state: 1,
            class: 16,
            text: text.into(),
            procedure: String::new(),
            line: 1,
        }
    }
}

fn put_message(out: &mut BytesMut, token: u8, msg: &ServerMessage, server: &str) {
    with_u16_len(out, token, |out| {
        out.put_i32_le(msg.number);
        out.put_u8(msg.state);
        out.put_u8(msg.class);
        put_us_varchar(out, &msg.text);
        put_b_varchar(out, server);
        put_b_varchar(out, &msg.procedure);
        out.put_u32_le(msg.line);
    });
}

pub fn error(out: &mut BytesMut, msg: &ServerMessage, server: &str) {
    put_message(out, ERROR, msg, server);
}

pub fn info(out: &mut BytesMut, msg: &ServerMessage, server: &str) {
    put_message(out, INFO, msg, server);
}

/// LOGINACK for T-SQL over TDS 7.4.
pub fn login_ack(out: &mut BytesMut) {
    with_u16_len(out, LOGINACK, |out| {
        out.put_u8(1);
        out.put_u32(0x7400_0004); // big-endian on purpose
        put_b_varchar(out, "Microsoft SQL Server");
        out.extend_from_slice(&[0x10, 0x00, 0x07, 0xD0]);
    });
}

/// FEATUREEXTACK acknowledging FEDAUTH (no nonce, so no data).
pub fn feature_ext_ack_fedauth(out: &mut BytesMut) {
    out.put_u8(FEATUREEXTACK);
    out.put_u8(0x02);
    out.put_u32_le(0);
    out.put_u8(0xFF);
}

/// DONE, DONEPROC or DONEINPROC.
pub fn done(out: &mut BytesMut, token: u8, status: u16, cur_cmd: u16, rows: u64) {
    out.put_u8(token);
    out.put_u16_le(status);
    out.put_u16_le(cur_cmd);
    out.put_u64_le(rows);
}

pub fn return_status(out: &mut BytesMut, status: i32) {
    out.put_u8(RETURNSTATUS);
    out.put_i32_le(status);
}

/// A result column as the fake announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: String,
    pub ty: ColType,
    pub nullable: bool,
}

/// COLMETADATA for `columns`.
pub fn col_metadata(out: &mut BytesMut, columns: &[ColumnSpec]) {
    out.put_u8(COLMETADATA);
    out.put_u16_le(columns.len() as u16);
    for column in columns {
        out.put_u32_le(0); // UserType
        out.put_u16_le(if column.nullable { 0x0001 } else { 0x0000 });
        column.ty.put_type_info(out);
        put_b_varchar(out, &column.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
    }

    #[test]
    fn login_tokens_match_the_verified_bytes() {
        let mut out = BytesMut::new();
        env_collation(&mut out);
        assert_eq!(
            &out[..],
            &[0xE3, 0x08, 0x00, 0x07, 0x05, 0x09, 0x04, 0xD0, 0x00, 0x34, 0x00]
        );

        let mut out = BytesMut::new();
        env_packet_size(&mut out, 4096);
        let mut expected = vec![0xE3, 0x13, 0x00, 0x04, 0x04];
        expected.extend(utf16("4096"));
        expected.push(0x04);
        expected.extend(utf16("4096"));
        assert_eq!(&out[..], &expected[..]);

        let mut out = BytesMut::new();
        env_database(&mut out, "appdb", "master");
        let mut expected = vec![0xE3, 0x19, 0x00, 0x01, 0x05];
        expected.extend(utf16("appdb"));
        expected.push(0x06);
        expected.extend(utf16("master"));
        assert_eq!(&out[..], &expected[..]);

        let mut out = BytesMut::new();
        login_ack(&mut out);
        let mut expected = vec![0xAD, 0x32, 0x00, 0x01, 0x74, 0x00, 0x00, 0x04, 0x14];
        expected.extend(utf16("Microsoft SQL Server"));
        expected.extend([0x10, 0x00, 0x07, 0xD0]);
        assert_eq!(&out[..], &expected[..]);

        let mut out = BytesMut::new();
        feature_ext_ack_fedauth(&mut out);
        assert_eq!(&out[..], &[0xAE, 0x02, 0, 0, 0, 0, 0xFF]);
    }

    #[test]
    fn select_result_matches_the_verified_bytes() {
        // SELECT id, name as in the wire contracts, except that the fake
        // always announces the nullable INTN form (0x26 0x04) for integers.
        let mut out = BytesMut::new();
        col_metadata(
            &mut out,
            &[
                ColumnSpec {
                    name: "id".into(),
                    ty: ColType::Int { bytes: 4 },
                    nullable: false,
                },
                ColumnSpec {
                    name: "name".into(),
                    ty: ColType::NVarChar {
                        max_chars: Some(50),
                    },
                    nullable: true,
                },
            ],
        );
        let mut expected = vec![0x81, 0x02, 0x00, 0, 0, 0, 0, 0, 0, 0x26, 0x04, 0x02];
        expected.extend(utf16("id"));
        expected.extend([
            0, 0, 0, 0, 0x01, 0x00, 0xE7, 0x64, 0x00, 0x09, 0x04, 0xD0, 0x00, 0x34,
        ]);
        expected.push(0x04);
        expected.extend(utf16("name"));
        assert_eq!(&out[..], &expected[..]);

        let mut out = BytesMut::new();
        done(&mut out, DONE, DONE_COUNT, CMD_SELECT, 2);
        assert_eq!(
            &out[..],
            &[0xFD, 0x10, 0x00, 0xC1, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn error_token_layout() {
        let mut out = BytesMut::new();
        let msg = ServerMessage {
            number: 18456,
            state: 1,
            class: 14,
            text: "Login failed for user 'x'.".into(),
            procedure: String::new(),
            line: 1,
        };
        error(&mut out, &msg, "srv");
        assert_eq!(out[0], ERROR);
        let len = u16::from_le_bytes([out[1], out[2]]) as usize;
        assert_eq!(len, out.len() - 3);
        assert_eq!(&out[3..7], &18456i32.to_le_bytes());
        assert_eq!((out[7], out[8]), (1, 14));
        let chars = u16::from_le_bytes([out[9], out[10]]) as usize;
        assert_eq!(chars, msg.text.len());
    }
}
