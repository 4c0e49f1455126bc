//! LOGIN7 (packet type 0x10) parsing, including the FEDAUTH feature
//! extension that carries the Entra access token (wire contracts §8).

/// FeatureExt id of FEDAUTH.
const FEATURE_FEDAUTH: u8 = 0x02;
const FEATURE_TERMINATOR: u8 = 0xFF;
/// bFedAuthLibrary value for a token the client obtained itself.
pub const FEDAUTH_LIBRARY_SECURITY_TOKEN: u8 = 0x01;
/// OptionFlags3 bit announcing the FeatureExt block.
const OPTION3_EXTENSION: u8 = 0x10;
const FIXED_LEN: usize = 94;

/// The parts of a LOGIN7 the fake uses.
#[derive(Clone, PartialEq, Eq)]
pub struct Login7 {
    pub tds_version: u32,
    pub packet_size: u32,
    pub host_name: String,
    pub user_name: String,
    /// True when a (SQL authentication) password was sent.
    pub has_password: bool,
    pub app_name: String,
    pub server_name: String,
    pub database: String,
    pub fed_auth: Option<FedAuth>,
}

impl std::fmt::Debug for Login7 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login7")
            .field("tds_version", &format_args!("{:#010x}", self.tds_version))
            .field("packet_size", &self.packet_size)
            .field("user_name", &self.user_name)
            .field("app_name", &self.app_name)
            .field("server_name", &self.server_name)
            .field("database", &self.database)
            .field("fed_auth", &self.fed_auth)
            .finish_non_exhaustive()
    }
}

/// The FEDAUTH feature: which library produced the token, the echo bit and
/// the token itself.
#[derive(Clone, PartialEq, Eq)]
pub struct FedAuth {
    pub library: u8,
    pub echo: bool,
    pub token: String,
    pub nonce: Option<[u8; 32]>,
}

impl std::fmt::Debug for FedAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FedAuth")
            .field("library", &self.library)
            .field("echo", &self.echo)
            .field("token", &"** redacted **")
            .finish()
    }
}

/// Why a LOGIN7 payload cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed LOGIN7: {0}")]
pub struct LoginError(pub String);

fn err(msg: impl Into<String>) -> LoginError {
    LoginError(msg.into())
}

fn u16_at(p: &[u8], at: usize) -> Result<u16, LoginError> {
    p.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| err(format!("truncated at offset {at}")))
}

fn u32_at(p: &[u8], at: usize) -> Result<u32, LoginError> {
    p.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| err(format!("truncated at offset {at}")))
}

/// Decodes UTF-16LE bytes, refusing an odd length or unpaired surrogates.
pub fn utf16(bytes: &[u8]) -> Result<String, LoginError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(err("odd UTF-16 byte length"));
    }
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).map_err(|_| err("invalid UTF-16"))
}

/// The string at the (offset, char count) pair stored at `slot`.
fn string_at(p: &[u8], slot: usize) -> Result<String, LoginError> {
    let offset = u16_at(p, slot)? as usize;
    let chars = u16_at(p, slot + 2)? as usize;
    let bytes = p
        .get(offset..offset + chars * 2)
        .ok_or_else(|| err(format!("string at slot {slot} lies outside the message")))?;
    utf16(bytes)
}

/// Parses a LOGIN7 payload.
pub fn parse(p: &[u8]) -> Result<Login7, LoginError> {
    if p.len() < FIXED_LEN {
        return Err(err("shorter than the fixed header"));
    }
    let declared = u32_at(p, 0)? as usize;
    if declared > p.len() {
        return Err(err("length field larger than the message"));
    }
    let option3 = p[27];
    let password_chars = u16_at(p, 46)?;
    let mut login = Login7 {
        tds_version: u32_at(p, 4)?,
        packet_size: u32_at(p, 8)?,
        host_name: string_at(p, 36)?,
        user_name: string_at(p, 40)?,
        has_password: password_chars > 0,
        app_name: string_at(p, 48)?,
        server_name: string_at(p, 52)?,
        database: string_at(p, 68)?,
        fed_auth: None,
    };
    if option3 & OPTION3_EXTENSION != 0 {
        let ib_extension = u16_at(p, 56)? as usize;
        let cb_extension = u16_at(p, 58)? as usize;
        if cb_extension < 4 {
            return Err(err("fExtension set but cbExtension < 4"));
        }
        let feature_offset = u32_at(p, ib_extension)? as usize;
        login.fed_auth = parse_features(p, feature_offset)?;
    }
    Ok(login)
}

fn parse_features(p: &[u8], mut pos: usize) -> Result<Option<FedAuth>, LoginError> {
    let mut fed_auth = None;
    loop {
        let id = *p
            .get(pos)
            .ok_or_else(|| err("FeatureExt block not terminated"))?;
        if id == FEATURE_TERMINATOR {
            return Ok(fed_auth);
        }
        let len = u32_at(p, pos + 1)? as usize;
        let data = p
            .get(pos + 5..pos + 5 + len)
            .ok_or_else(|| err("feature data outside the message"))?;
        if id == FEATURE_FEDAUTH {
            fed_auth = Some(parse_fed_auth(data)?);
        }
        pos += 5 + len;
    }
}

fn parse_fed_auth(data: &[u8]) -> Result<FedAuth, LoginError> {
    let options = *data.first().ok_or_else(|| err("empty FEDAUTH feature"))?;
    let library = options >> 1;
    let echo = options & 1 == 1;
    if library != FEDAUTH_LIBRARY_SECURITY_TOKEN {
        // ADAL workflows send no token here; the fake only knows tokens.
        return Ok(FedAuth {
            library,
            echo,
            token: String::new(),
            nonce: None,
        });
    }
    let token_len = u32_at(data, 1)? as usize;
    let token_bytes = data
        .get(5..5 + token_len)
        .ok_or_else(|| err("FEDAUTH token longer than its feature"))?;
    let rest = &data[5 + token_len..];
    let nonce = match rest.len() {
        0 => None,
        32 => Some(rest.try_into().map_err(|_| err("nonce"))?),
        _ => return Err(err("FEDAUTH feature has trailing bytes")),
    };
    Ok(FedAuth {
        library,
        echo,
        token: utf16(token_bytes)?,
        nonce,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn utf16le(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
    }

    /// A LOGIN7 laid out the way tiberius 0.13 builds it.
    pub(crate) fn tiberius_like_login(database: &str, token: Option<&str>) -> Vec<u8> {
        let strings = [
            ("host", 36usize),
            ("", 40),
            ("", 44),
            ("tiberius", 48),
            ("localhost", 52),
            ("", 60),
            ("", 64),
            (database, 68),
        ];
        let mut p = vec![0u8; FIXED_LEN];
        p[4..8].copy_from_slice(&0x7400_0004u32.to_le_bytes());
        p[8..12].copy_from_slice(&4096u32.to_le_bytes());
        p[24] = 0x60;
        p[25] = 0x03;
        p[27] = if token.is_some() { 0x18 } else { 0x08 };
        let mut data = Vec::new();
        let mut ext_slot = None;
        for (s, slot) in strings {
            if slot == 60 && token.is_some() {
                // ibExtension sits between ServerName and CltIntName.
                let at = FIXED_LEN + data.len();
                p[56..58].copy_from_slice(&(at as u16).to_le_bytes());
                p[58..60].copy_from_slice(&4u16.to_le_bytes());
                ext_slot = Some(data.len());
                data.extend_from_slice(&[0; 4]);
            }
            let at = FIXED_LEN + data.len();
            let bytes = utf16le(s);
            p[slot..slot + 2].copy_from_slice(&(at as u16).to_le_bytes());
            p[slot + 2..slot + 4].copy_from_slice(&(s.encode_utf16().count() as u16).to_le_bytes());
            data.extend_from_slice(&bytes);
        }
        if let (Some(token), Some(slot)) = (token, ext_slot) {
            let feature_at = (FIXED_LEN + data.len()) as u32;
            data[slot..slot + 4].copy_from_slice(&feature_at.to_le_bytes());
            let token_bytes = utf16le(token);
            data.push(FEATURE_FEDAUTH);
            data.extend_from_slice(&(1 + 4 + token_bytes.len() as u32).to_le_bytes());
            data.push((FEDAUTH_LIBRARY_SECURITY_TOKEN << 1) | 1);
            data.extend_from_slice(&(token_bytes.len() as u32).to_le_bytes());
            data.extend_from_slice(&token_bytes);
            data.push(FEATURE_TERMINATOR);
        }
        p.extend_from_slice(&data);
        let len = p.len() as u32;
        p[0..4].copy_from_slice(&len.to_le_bytes());
        p
    }

    #[test]
    fn fedauth_token_database_and_version_are_read() {
        let token = "eyJ0eXAiOiJKV1QifQ.".repeat(200); // ~4 KB, like a real JWT
        let login = parse(&tiberius_like_login("appdb", Some(&token))).unwrap();
        assert_eq!(login.tds_version, 0x7400_0004);
        assert_eq!(login.packet_size, 4096);
        assert_eq!(login.database, "appdb");
        assert_eq!(login.app_name, "tiberius");
        assert_eq!(login.server_name, "localhost");
        assert!(!login.has_password);
        let fed = login.fed_auth.unwrap();
        assert_eq!(fed.library, FEDAUTH_LIBRARY_SECURITY_TOKEN);
        assert!(fed.echo);
        assert_eq!(fed.token, token);
        assert!(!format!("{fed:?}").contains("eyJ"));
    }

    #[test]
    fn a_login_without_extension_has_no_token() {
        let login = parse(&tiberius_like_login("", None)).unwrap();
        assert!(login.fed_auth.is_none());
        assert_eq!(login.database, "");
    }

    #[test]
    fn truncated_or_lying_logins_are_errors() {
        let good = tiberius_like_login("appdb", Some("abc"));
        for cut in [10, FIXED_LEN - 1, good.len() - 3] {
            let mut short = good[..cut].to_vec();
            if short.len() >= 4 {
                let l = short.len() as u32;
                short[0..4].copy_from_slice(&l.to_le_bytes());
            }
            assert!(parse(&short).is_err(), "cut at {cut}");
        }
        let mut bad_offset = good.clone();
        bad_offset[68..70].copy_from_slice(&0xFFF0u16.to_le_bytes());
        assert!(parse(&bad_offset).is_err());
    }
}

/// The LOGIN7 parser on hostile input: valid logins with bytes changed, cut
/// or extended, and arbitrary bytes (bounded runs: 512 cases).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn mutated_logins_parse_or_fail_cleanly(
            with_token in any::<bool>(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            cut in any::<prop::sample::Index>(),
            extra in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let mut login = tests::tiberius_like_login("db", with_token.then_some("token"));
            for (at, byte) in edits {
                let i = at.index(login.len());
                login[i] = byte;
            }
            login.truncate(cut.index(login.len() + 1));
            login.extend(extra);
            let _ = parse(&login);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }
    }
}
