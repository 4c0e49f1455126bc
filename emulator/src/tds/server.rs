//! The fake's connection loop: PRELOGIN, TLS inside PRELOGIN packets,
//! LOGIN7 with the FEDAUTH token verified against the emulator's authority,
//! then requests answered by an [`Engine`] thread while a reader task watches
//! for ATTENTION and a writer task drains response packets.

use std::{
    io,
    sync::{atomic::Ordering, Arc},
};

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};
use tokio_rustls::TlsAcceptor;

use super::{
    engine::{Engine, ResponseWriter},
    login::{self, Login7, FEDAUTH_LIBRARY_SECURITY_TOKEN},
    packet::{frame_message, read_message, Message, PacketType, STATUS_IGNORE},
    prelogin::{self, ClientPrelogin, ENCRYPT_NOT_SUP, ENCRYPT_REQ},
    rpc,
    tokens::{self, ServerMessage},
    Encryption, LoginRecord, Shared,
};
use crate::VerifyError;

/// Largest LOGIN7 accepted (a JWT is a few KB).
const MAX_LOGIN: usize = 128 * 1024;
/// Largest request accepted.
const MAX_REQUEST: usize = 16 * 1024 * 1024;
/// The user name Azure SQL shows for token logins.
const TOKEN_PRINCIPAL: &str = "<token-identified principal>";

/// Accepts connections until `shutdown` flips.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(&shared);
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shared.stats.open.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = connection(stream, Arc::clone(&shared), tls, shutdown).await {
                tracing::debug!(%e, "fake TDS connection ended");
            }
            shared.stats.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

async fn connection(
    mut stream: TcpStream,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let Some(msg) = read_message(&mut stream, 4096)
        .await
        .map_err(|e| invalid(e.to_string()))?
    else {
        return Ok(());
    };
    if msg.ty != PacketType::PreLogin {
        return Err(invalid("the first message is not PRELOGIN"));
    }
    let pre = prelogin::parse(&msg.payload).map_err(|e| invalid(e.to_string()))?;
    let fed_auth = pre.fed_auth_required == Some(1);
    let level = match (&shared.encryption, &tls) {
        (Encryption::Required, Some(_)) => ENCRYPT_REQ,
        _ => ENCRYPT_NOT_SUP,
    };
    let answer = prelogin::response(level, fed_auth);
    stream
        .write_all(&frame_message(PacketType::TabularResult, &answer, 4096))
        .await?;
    match tls {
        Some(acceptor) if level == ENCRYPT_REQ => {
            let wrapped = super::tls::PreloginTls::new(stream);
            let mut tls_stream = acceptor.accept(wrapped).await?;
            tls_stream.get_mut().0.handshake_done();
            session(tls_stream, shared, pre, shutdown).await
        }
        _ => session(stream, shared, pre, shutdown).await,
    }
}

async fn session<S>(
    mut io: S,
    shared: Arc<Shared>,
    pre: ClientPrelogin,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(msg) = read_message(&mut io, MAX_LOGIN)
        .await
        .map_err(|e| invalid(e.to_string()))?
    else {
        return Ok(());
    };
    if msg.ty != PacketType::Login7 {
        return Err(invalid("expected LOGIN7 after PRELOGIN"));
    }
    let login = login::parse(&msg.payload).map_err(|e| invalid(e.to_string()))?;
    let packet_size = match login.packet_size {
        0 => 4096,
        n => n.clamp(512, 32767),
    } as usize;
    let outcome = shared.authenticate(&login, &pre);
    let mut out = BytesMut::new();
    let principal = match outcome {
        Err(msg) => {
            tokens::error(&mut out, &msg, &shared.settings.server_name);
            tokens::done(&mut out, tokens::DONE, tokens::DONE_ERROR, 0, 0);
            io.write_all(&frame_message(PacketType::TabularResult, &out, packet_size))
                .await?;
            io.flush().await?;
            let _ = io.shutdown().await;
            return Ok(());
        }
        Ok(principal) => principal,
    };
    let redirect = shared.redirect.lock().ok().and_then(|r| r.clone());
    if let Some((host, port)) = redirect {
        // Azure SQL's redirect policy: acknowledge, then send the client on.
        tokens::login_ack(&mut out);
        tokens::env_routing(&mut out, &host, port);
        tokens::done(&mut out, tokens::DONE, tokens::DONE_FINAL, 0, 0);
        io.write_all(&frame_message(PacketType::TabularResult, &out, packet_size))
            .await?;
        io.flush().await?;
        let _ = io.shutdown().await;
        return Ok(());
    }
    let database = shared.settings.database.clone();
    tokens::env_database(&mut out, &database, "master");
    tokens::env_collation(&mut out);
    tokens::env_packet_size(&mut out, packet_size as u32);
    tokens::info(
        &mut out,
        &ServerMessage {
            number: 5701,
            state: 2,
            class: 0,
            text: format!("Changed database context to '{database}'."),
            procedure: String::new(),
            line: 1,
        },
        &shared.settings.server_name,
    );
    tokens::login_ack(&mut out);
    if login.fed_auth.is_some() {
        tokens::feature_ext_ack_fedauth(&mut out);
    }
    tokens::done(&mut out, tokens::DONE, tokens::DONE_FINAL, 0, 0);
    io.write_all(&frame_message(PacketType::TabularResult, &out, packet_size))
        .await?;
    io.flush().await?;

    let engine = Engine::open(
        &shared.db_path,
        Arc::clone(&shared.settings),
        Arc::clone(&shared.stats),
        principal,
    )
    .map_err(|e| io::Error::other(e.to_string()))?;

    let interrupt = engine.interrupt_handle();
    let (mut reader, mut writer) = tokio::io::split(io);
    let attention = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (in_tx, mut in_rx) = mpsc::channel::<Input>(16);
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(4);

    let engine_attention = Arc::clone(&attention);
    let engine_thread = std::thread::Builder::new()
        .name("fake-tds-engine".into())
        .spawn(move || {
            let mut engine = engine;
            while let Some(input) = in_rx.blocking_recv() {
                let mut w = ResponseWriter::new(&out_tx, &engine_attention, packet_size);
                let result = match input {
                    Input::Attention => {
                        // Not consumed mid-stream: acknowledge on its own.
                        if !engine_attention.swap(false, Ordering::AcqRel) {
                            continue;
                        }
                        tokens::done(w.buf(), tokens::DONE, tokens::DONE_ATTN, 0, 0);
                        Ok(())
                    }
                    Input::Request(request) => engine.run(request, &mut w),
                    Input::Malformed(text) => {
                        tokens::error(w.buf(), &ServerMessage::error(8009, text), "fake-sql");
                        tokens::done(w.buf(), tokens::DONE, tokens::DONE_ERROR, 0, 0);
                        Ok(())
                    }
                };
                if result.is_err() || w.finish().is_err() {
                    return;
                }
            }
        })?;

    let stats = Arc::clone(&shared.stats);
    let read_side = async move {
        loop {
            let msg: Message = match read_message(&mut reader, MAX_REQUEST).await {
                Ok(Some(msg)) => msg,
                Ok(None) | Err(_) => {
                    // The client is gone: stop whatever is still computing.
                    interrupt.interrupt();
                    return;
                }
            };
            let input = match msg.ty {
                PacketType::Attention => {
                    stats.attentions.fetch_add(1, Ordering::Relaxed);
                    attention.store(true, Ordering::Release);
                    // Stops a statement that is still computing its first row.
                    interrupt.interrupt();
                    Input::Attention
                }
                _ if msg.status & STATUS_IGNORE != 0 => continue,
                PacketType::SqlBatch => {
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                    rpc::parse_batch(&msg.payload)
                        .map_or_else(|e| Input::Malformed(e.to_string()), Input::Request)
                }
                PacketType::Rpc => {
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                    rpc::parse_rpc(&msg.payload)
                        .map_or_else(|e| Input::Malformed(e.to_string()), Input::Request)
                }
                other => Input::Malformed(format!(
                    "packet type {:#04x} is not supported by the fake",
                    other.byte()
                )),
            };
            if in_tx.send(input).await.is_err() {
                return;
            }
        }
    };
    let write_side = async move {
        while let Some(chunk) = out_rx.recv().await {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
            // Coalesce what is already queued before flushing TLS.
            while let Ok(more) = out_rx.try_recv() {
                if writer.write_all(&more).await.is_err() {
                    return;
                }
            }
            if writer.flush().await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    };
    tokio::select! {
        _ = async { tokio::join!(read_side, write_side) } => {}
        _ = shutdown.changed() => {}
    }
    // Dropping the halves closes the socket; the engine thread ends when its
    // channels close.
    let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    Ok(())
}

/// What the reader hands the engine thread.
enum Input {
    Request(rpc::Request),
    Attention,
    Malformed(String),
}

impl Shared {
    /// Checks a LOGIN7 the way Azure SQL does for token logins, records it,
    /// and returns the principal's display name.
    pub(crate) fn authenticate(
        &self,
        login: &Login7,
        pre: &ClientPrelogin,
    ) -> Result<String, ServerMessage> {
        let mut record = LoginRecord {
            token_id: None,
            oid: None,
            appid: None,
            audience: None,
            database: login.database.clone(),
            accepted: false,
            error: None,
        };
        let result = self.check_login(login, pre, &mut record);
        if let Err(msg) = &result {
            record.error = Some((msg.number, msg.text.clone()));
        } else {
            record.accepted = true;
        }
        if let Ok(mut logins) = self.logins.lock() {
            logins.push(record);
        }
        result
    }

    fn check_login(
        &self,
        login: &Login7,
        pre: &ClientPrelogin,
        record: &mut LoginRecord,
    ) -> Result<String, ServerMessage> {
        let failed = |state: u8, detail: &str| ServerMessage {
            number: 18456,
            state,
            class: 14,
            text: format!("Login failed for user '{TOKEN_PRINCIPAL}'.{detail}"),
            procedure: String::new(),
            line: 1,
        };
        let Some(fed) = &login.fed_auth else {
            return Err(ServerMessage {
                number: 18456,
                state: 1,
                class: 14,
                text: format!(
                    "Login failed for user '{}'. Reason: Azure Active Directory only authentication is enabled on the server.",
                    login.user_name
                ),
                procedure: String::new(),
                line: 1,
            });
        };
        let required = pre.fed_auth_required == Some(1);
        if fed.echo != required {
            return Err(failed(
                68,
                " The FEDAUTH echo bit does not match the server's FEDAUTHREQUIRED answer.",
            ));
        }
        if fed.library != FEDAUTH_LIBRARY_SECURITY_TOKEN {
            return Err(failed(
                68,
                " Only access tokens (the SECURITYTOKEN library) are supported.",
            ));
        }
        let claims = match self
            .authority
            .verify(&fed.token, &self.audience, self.now())
        {
            Ok(claims) => claims,
            Err(VerifyError::Expired) => return Err(failed(132, " Token is expired.")),
            Err(VerifyError::WrongAudience { actual, .. }) => {
                record.audience = Some(actual);
                return Err(failed(
                    133,
                    " The token's audience is not valid for this server.",
                ));
            }
            Err(VerifyError::NotYetValid) => {
                return Err(failed(134, " The token is not valid yet."))
            }
            Err(VerifyError::BadToken(_)) => {
                return Err(failed(134, " The token could not be validated."))
            }
        };
        record.token_id = Some(claims.uti.clone());
        if self
            .expired_tokens
            .lock()
            .is_ok_and(|expired| expired.contains(&claims.uti))
        {
            return Err(failed(132, " Token is expired."));
        }
        record.oid = Some(claims.oid.clone());
        record.appid = Some(claims.appid.clone());
        record.audience = Some(claims.aud.clone());
        let database = &self.settings.database;
        if !login.database.is_empty() && !login.database.eq_ignore_ascii_case(database) {
            return Err(ServerMessage {
                number: 4060,
                state: 1,
                class: 11,
                text: format!(
                    "Cannot open database \"{}\" requested by the login. The login failed.",
                    login.database
                ),
                procedure: String::new(),
                line: 1,
            });
        }
        let has_user = match &*self.users.read().map_err(|_| failed(1, ""))? {
            super::DatabaseUsers::Any => true,
            super::DatabaseUsers::Only(oids) => oids.contains(&claims.oid.to_ascii_lowercase()),
        };
        if !has_user {
            // Exactly what Azure SQL says when the principal has no user.
            return Err(failed(1, ""));
        }
        let name = claims
            .xms_mirid
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or(&claims.appid);
        Ok(format!("{name}@{}", claims.tid))
    }
}
