//! Executing requests against the fake's SQLite database and encoding the
//! results as TDS tokens: one [`Engine`] per TDS connection, run on its own
//! thread (SQLite is synchronous), writing packets through a
//! [`ResponseWriter`] that streams them out in bounded chunks and notices
//! ATTENTION between rows (a statement still computing is interrupted).
//!
//! The SQL dialect is SQLite's, with T-SQL conveniences: `dbo.`/`[dbo].`
//! schema prefixes are accepted, `@P1`-style parameters bind by name, and
//! `SUSER_SNAME()`, `DB_NAME()`, `SYSUTCDATETIME()`, `GETUTCDATE()` and
//! `NEWID()` exist. SQLite errors are answered with the SQL Server error a
//! client would see (208, 207, 102, 229, 2627, 515, ...).
//!
//! Session state lives as long as the TDS connection, as on SQL Server, so
//! a client that shares connections can see it leak: `#name` tables are
//! the session's own (SQLite TEMP tables of the connection's database
//! handle), and `SET IMPLICIT_TRANSACTIONS ON` makes the next INSERT,
//! UPDATE, DELETE or DDL open a transaction that stays open until COMMIT or
//! ROLLBACK: writes nobody commits are lost when the session ends.
//! `SET NOCOUNT ON|OFF` is accepted; `BEGIN/COMMIT/ROLLBACK TRAN` too.

use std::{
    collections::HashSet,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::{Bytes, BytesMut};
use rusqlite::{
    fallible_iterator::FallibleIterator,
    functions::FunctionFlags,
    hooks::{AuthAction, AuthContext, Authorization},
    types::ValueRef,
    Batch, Connection, OpenFlags,
};
use tokio::sync::mpsc;

use super::{
    packet::{Framer, PacketType},
    rpc::{Param, Request, Value},
    tokens::{self, ColumnSpec, ServerMessage},
    types::{format_date, format_time, ColType},
    Stats,
};

/// Framed bytes are handed to the socket writer once this many pile up:
/// a million-row result wakes the writer a few hundred times, not a few
/// thousand (the fake shares the benchmark machine's cores with what it
/// serves).
const CHUNK: usize = 256 * 1024;
/// ... or once this many have waited [`SHIP_AFTER`]: a slow query's rows
/// leave as the engine produces them, as a real server's packets do.
const SMALL_CHUNK: usize = 32 * 1024;
const SHIP_AFTER: Duration = Duration::from_millis(1);

/// The client went away while a response was being written.
#[derive(Debug)]
pub(crate) struct Disconnected;

/// Streams one response message: tokens go into a [`Framer`], full packets
/// leave in chunks through a bounded channel (so a client that stops reading
/// stops the engine), and ATTENTION is checked between rows.
pub(crate) struct ResponseWriter<'a> {
    framer: Framer,
    out: &'a mpsc::Sender<Bytes>,
    attention: &'a AtomicBool,
    /// When bytes were last shipped, and how many framed bytes make the
    /// next look at the clock (every [`SMALL_CHUNK`], not every row).
    shipped_at: Instant,
    next_check: usize,
}

impl<'a> ResponseWriter<'a> {
    pub(crate) fn new(
        out: &'a mpsc::Sender<Bytes>,
        attention: &'a AtomicBool,
        packet_size: usize,
    ) -> Self {
        Self {
            framer: Framer::new(PacketType::TabularResult, packet_size),
            out,
            attention,
            shipped_at: Instant::now(),
            next_check: SMALL_CHUNK,
        }
    }

    pub(crate) fn buf(&mut self) -> &mut BytesMut {
        self.framer.buffer()
    }

    /// Frames full packets and ships them once a chunk has accumulated, or
    /// a small one has waited.
    fn tick(&mut self) -> Result<(), Disconnected> {
        self.framer.cut_full_packets();
        let framed = self.framer.framed_len();
        if framed < self.next_check {
            return Ok(());
        }
        if framed >= CHUNK || self.shipped_at.elapsed() >= SHIP_AFTER {
            let chunk = self.framer.take_framed().freeze();
            self.out.blocking_send(chunk).map_err(|_| Disconnected)?;
            self.shipped_at = Instant::now();
            self.next_check = SMALL_CHUNK;
        } else {
            self.next_check = (framed + SMALL_CHUNK).min(CHUNK);
        }
        Ok(())
    }

    /// True (once) when the client sent ATTENTION.
    fn attention_requested(&self) -> bool {
        self.attention.load(Ordering::Relaxed) && self.attention.swap(false, Ordering::AcqRel)
    }

    /// Ends the message (EOM) and ships it.
    pub(crate) fn finish(self) -> Result<(), Disconnected> {
        let last = self.framer.finish().freeze();
        self.out.blocking_send(last).map_err(|_| Disconnected)
    }
}

/// Settings shared by every connection of one fake.
#[derive(Debug)]
pub(crate) struct EngineSettings {
    pub database: String,
    pub server_name: String,
    /// Tables whose use is refused with error 229 (lower-case names).
    pub forbidden: RwLock<HashSet<String>>,
}

/// The kind of request being answered: batches end statements with DONE,
/// RPCs with DONEINPROC and close with RETURNSTATUS + DONEPROC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Batch,
    Rpc,
}

/// How a statement loop ended.
enum Outcome {
    Completed,
    Failed,
    Cancelled,
}

/// One connection's SQLite session.
pub(crate) struct Engine {
    conn: Connection,
    settings: Arc<EngineSettings>,
    stats: Arc<Stats>,
    /// What the authorizer refused last: (action, table).
    denied: Arc<Mutex<Option<(&'static str, String)>>>,
    /// `SET` options of this session.
    session: Arc<SessionOptions>,
}

/// A session's `SET` options (set through `__session_option`).
#[derive(Debug, Default)]
struct SessionOptions {
    implicit_transactions: AtomicBool,
}

/// What `SET ...` statements are rewritten to call.
const SESSION_OPTION_FN: &str = "__session_option";

impl Engine {
    /// Opens the fake's database for a session of `principal`.
    pub(crate) fn open(
        path: &Path,
        settings: Arc<EngineSettings>,
        stats: Arc<Stats>,
        principal: String,
    ) -> rusqlite::Result<Self> {
        // The database exists already (the fake created it): not created here.
        let conn = super::prepare_connection(Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?)?;
        register_functions(&conn, principal, settings.database.clone())?;
        let session = Arc::new(SessionOptions::default());
        let options = Arc::clone(&session);
        conn.create_scalar_function(
            SESSION_OPTION_FN,
            2,
            FunctionFlags::SQLITE_UTF8,
            move |ctx| {
                let name: String = ctx.get(0)?;
                let on: bool = ctx.get(1)?;
                if name == "implicit_transactions" {
                    options.implicit_transactions.store(on, Ordering::Relaxed);
                }
                Ok(0)
            },
        )?;
        let denied = Arc::new(Mutex::new(None));
        let hook_denied = Arc::clone(&denied);
        let hook_settings = Arc::clone(&settings);
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            let (action, table) = match ctx.action {
                AuthAction::Read { table_name, .. } => ("SELECT", table_name),
                AuthAction::Insert { table_name } => ("INSERT", table_name),
                AuthAction::Update { table_name, .. } => ("UPDATE", table_name),
                AuthAction::Delete { table_name } => ("DELETE", table_name),
                _ => return Authorization::Allow,
            };
            let forbidden = hook_settings
                .forbidden
                .read()
                .map(|f| f.contains(&table.to_ascii_lowercase()))
                .unwrap_or(false);
            if forbidden {
                if let Ok(mut d) = hook_denied.lock() {
                    *d = Some((action, table.to_string()));
                }
                Authorization::Deny
            } else {
                Authorization::Allow
            }
        }));
        Ok(Self {
            conn,
            settings,
            stats,
            denied,
            session,
        })
    }

    /// A handle that aborts the statement running now (for ATTENTION).
    pub(crate) fn interrupt_handle(&self) -> rusqlite::InterruptHandle {
        self.conn.get_interrupt_handle()
    }

    /// Answers one request.
    pub(crate) fn run(
        &mut self,
        request: Request,
        w: &mut ResponseWriter<'_>,
    ) -> Result<(), Disconnected> {
        match request {
            Request::Batch { sql } => {
                self.run_statements(&sql, &[], Mode::Batch, w)?;
            }
            Request::Rpc { procedure, params } if procedure.is_executesql() => {
                let Some(Value::Text(sql)) = params.first().map(|p| &p.value) else {
                    let msg = ServerMessage::error(
                        214,
                        "Procedure expects parameter '@statement' of type 'ntext/nchar/nvarchar'.",
                    );
                    self.fail_rpc(&msg, w);
                    return Ok(());
                };
                let sql = sql.clone();
                // params[1] declares the parameters; SQLite binds by name.
                let binds: Vec<Param> = params.into_iter().skip(2).collect();
                let outcome = self.run_statements(&sql, &binds, Mode::Rpc, w)?;
                match outcome {
                    Outcome::Completed => {
                        tokens::return_status(w.buf(), 0);
                        tokens::done(
                            w.buf(),
                            tokens::DONEPROC,
                            tokens::DONE_FINAL,
                            tokens::CMD_EXECUTE,
                            0,
                        );
                    }
                    Outcome::Failed => {
                        tokens::return_status(w.buf(), 0);
                        tokens::done(
                            w.buf(),
                            tokens::DONEPROC,
                            tokens::DONE_ERROR,
                            tokens::CMD_EXECUTE,
                            0,
                        );
                    }
                    Outcome::Cancelled => {}
                }
            }
            Request::Rpc { procedure, .. } => {
                let name = match procedure {
                    super::rpc::Procedure::Id(id) => format!("#{id}"),
                    super::rpc::Procedure::Name(n) => n,
                };
                let msg = ServerMessage::error(
                    2812,
                    format!("Could not find stored procedure '{name}'."),
                );
                self.fail_rpc(&msg, w);
            }
        }
        Ok(())
    }

    fn fail_rpc(&self, msg: &ServerMessage, w: &mut ResponseWriter<'_>) {
        tokens::error(w.buf(), msg, &self.settings.server_name);
        tokens::done(
            w.buf(),
            tokens::DONEPROC,
            tokens::DONE_ERROR,
            tokens::CMD_EXECUTE,
            0,
        );
    }

    /// Runs each statement of `sql`, ending each with DONE/DONEINPROC.
    fn run_statements(
        &mut self,
        sql: &str,
        binds: &[Param],
        mode: Mode,
        w: &mut ResponseWriter<'_>,
    ) -> Result<Outcome, Disconnected> {
        let sql = session_sql(&strip_dbo(sql));
        let done_token = match mode {
            Mode::Batch => tokens::DONE,
            Mode::Rpc => tokens::DONEINPROC,
        };
        // The DONE of the previous statement: MORE is set once another follows.
        let mut pending: Option<(u16, u64)> = None;
        let mut batch = Batch::new(&self.conn, &sql);
        let outcome = loop {
            if let Ok(mut d) = self.denied.lock() {
                *d = None;
            }
            let next = batch.next();
            let mut stmt = match next {
                Ok(Some(stmt)) => stmt,
                Ok(None) => break Outcome::Completed,
                Err(_) if w.attention_requested() => break Outcome::Cancelled,
                Err(e) => {
                    flush_pending(w, &mut pending, done_token, true);
                    let msg = map_error(&e, &self.denied, &self.settings.database);
                    tokens::error(w.buf(), &msg, &self.settings.server_name);
                    break Outcome::Failed;
                }
            };
            flush_pending(w, &mut pending, done_token, true);
            if let Err(msg) = bind(&mut stmt, binds) {
                tokens::error(w.buf(), &msg, &self.settings.server_name);
                break Outcome::Failed;
            }
            let text = stmt.expanded_sql().unwrap_or_default();
            let cur_cmd = statement_kind(&text);
            if text.trim_start().starts_with(SESSION_OPTION_PREFIX) {
                // A rewritten SET: runs, returns no rows, reports no count.
                match stmt.raw_query().next() {
                    Ok(_) => pending = Some((tokens::CMD_OTHER, 0)),
                    Err(e) => {
                        let msg = map_error(&e, &self.denied, &self.settings.database);
                        tokens::error(w.buf(), &msg, &self.settings.server_name);
                        break Outcome::Failed;
                    }
                }
                continue;
            }
            if self.session.implicit_transactions.load(Ordering::Relaxed)
                && self.conn.is_autocommit()
                && opens_implicit_transaction(&text)
            {
                // SQL Server opens the transaction the statement then runs in.
                if let Err(e) = self.conn.execute_batch("BEGIN") {
                    let msg = map_error(&e, &self.denied, &self.settings.database);
                    tokens::error(w.buf(), &msg, &self.settings.server_name);
                    break Outcome::Failed;
                }
            }
            if stmt.column_count() == 0 {
                match stmt.raw_execute() {
                    Ok(_) => pending = Some((cur_cmd, self.conn.changes())),
                    Err(_) if w.attention_requested() => break Outcome::Cancelled,
                    Err(e) => {
                        let msg = map_error(&e, &self.denied, &self.settings.database);
                        tokens::error(w.buf(), &msg, &self.settings.server_name);
                        break Outcome::Failed;
                    }
                }
                continue;
            }
            match self.stream_rows(&mut stmt, w)? {
                RowsOutcome::Done(count) => pending = Some((tokens::CMD_SELECT, count)),
                RowsOutcome::Failed(msg) => {
                    tokens::error(w.buf(), &msg, &self.settings.server_name);
                    break Outcome::Failed;
                }
                RowsOutcome::Cancelled => break Outcome::Cancelled,
            }
        };
        match outcome {
            Outcome::Completed => {
                let (cmd, rows) = pending.take().unwrap_or((tokens::CMD_OTHER, 0));
                let status = match mode {
                    // The RPC still owes RETURNSTATUS and DONEPROC.
                    Mode::Rpc => tokens::DONE_MORE | tokens::DONE_COUNT,
                    Mode::Batch => tokens::DONE_COUNT,
                };
                tokens::done(w.buf(), done_token, status, cmd, rows);
            }
            Outcome::Failed => {
                let status = match mode {
                    Mode::Rpc => tokens::DONE_ERROR | tokens::DONE_MORE,
                    Mode::Batch => tokens::DONE_ERROR,
                };
                tokens::done(w.buf(), done_token, status, tokens::CMD_OTHER, 0);
            }
            Outcome::Cancelled => {
                tokens::done(
                    w.buf(),
                    tokens::DONE,
                    tokens::DONE_ATTN,
                    tokens::CMD_OTHER,
                    0,
                );
            }
        }
        w.tick()?;
        Ok(outcome)
    }

    fn stream_rows(
        &self,
        stmt: &mut rusqlite::Statement<'_>,
        w: &mut ResponseWriter<'_>,
    ) -> Result<RowsOutcome, Disconnected> {
        let n = stmt.column_count();
        let declared: Vec<(String, Option<ColType>, bool)> = (0..n)
            .map(|i| {
                let name = stmt.column_name(i).map(str::to_string).unwrap_or_default();
                let decl = stmt
                    .columns()
                    .get(i)
                    .and_then(|c| c.decl_type().map(str::to_string));
                let not_null = matches!(
                    stmt.column_metadata(i),
                    Ok(Some((_, _, _, _, _, true, _, _)))
                );
                (
                    name,
                    decl.as_deref().and_then(ColType::from_decl),
                    !not_null,
                )
            })
            .collect();
        let stats = Arc::clone(&self.stats);
        let denied = Arc::clone(&self.denied);
        let database = self.settings.database.clone();
        let mut rows = stmt.raw_query();
        let first = match rows.next() {
            Ok(row) => row,
            Err(_) if w.attention_requested() => return Ok(RowsOutcome::Cancelled),
            Err(e) => return Ok(RowsOutcome::Failed(map_error(&e, &denied, &database))),
        };
        let columns: Vec<ColumnSpec> = declared
            .into_iter()
            .enumerate()
            .map(|(i, (name, ty, nullable))| {
                let ty = ty.unwrap_or_else(|| {
                    first
                        .and_then(|r| r.get_ref(i).ok())
                        .map_or(ColType::Int { bytes: 4 }, ColType::for_value)
                });
                ColumnSpec { name, ty, nullable }
            })
            .collect();
        tokens::col_metadata(w.buf(), &columns);
        let mut count = 0u64;
        let mut row = first;
        while let Some(r) = row {
            if w.attention_requested() {
                return Ok(RowsOutcome::Cancelled);
            }
            let buf = w.buf();
            let mark = buf.len();
            if let Err(msg) = encode_row(r, &columns, buf) {
                buf.truncate(mark);
                return Ok(RowsOutcome::Failed(msg));
            }
            count += 1;
            stats.rows_sent.fetch_add(1, Ordering::Relaxed);
            w.tick()?;
            row = match rows.next() {
                Ok(next) => next,
                Err(_) if w.attention_requested() => return Ok(RowsOutcome::Cancelled),
                Err(e) => return Ok(RowsOutcome::Failed(map_error(&e, &denied, &database))),
            };
        }
        Ok(RowsOutcome::Done(count))
    }
}

enum RowsOutcome {
    Done(u64),
    Failed(ServerMessage),
    Cancelled,
}

fn flush_pending(
    w: &mut ResponseWriter<'_>,
    pending: &mut Option<(u16, u64)>,
    token: u8,
    more: bool,
) {
    if let Some((cmd, rows)) = pending.take() {
        let status = tokens::DONE_COUNT | if more { tokens::DONE_MORE } else { 0 };
        tokens::done(w.buf(), token, status, cmd, rows);
    }
}

/// ROW, or NBCROW when the row holds a NULL.
fn encode_row(
    row: &rusqlite::Row<'_>,
    columns: &[ColumnSpec],
    buf: &mut BytesMut,
) -> Result<(), ServerMessage> {
    let mut values = Vec::with_capacity(columns.len());
    for i in 0..columns.len() {
        values.push(
            row.get_ref(i)
                .map_err(|e| ServerMessage::error(50000, e.to_string()))?,
        );
    }
    // Like SQL Server, NULLs travel inline in a ROW when rare and as an
    // NBCROW bitmap once they would cost more.
    let nulls = values
        .iter()
        .filter(|v| matches!(v, ValueRef::Null))
        .count();
    if nulls > 1 {
        buf.extend_from_slice(&[tokens::NBCROW]);
        let mut bitmap = vec![0u8; columns.len().div_ceil(8)];
        for (i, v) in values.iter().enumerate() {
            if matches!(v, ValueRef::Null) {
                bitmap[i / 8] |= 1 << (i % 8);
            }
        }
        buf.extend_from_slice(&bitmap);
        for (column, value) in columns.iter().zip(values) {
            if !matches!(value, ValueRef::Null) {
                column.ty.put_value(value, buf)?;
            }
        }
    } else {
        buf.extend_from_slice(&[tokens::ROW]);
        for (column, value) in columns.iter().zip(values) {
            match value {
                ValueRef::Null => column.ty.put_null(buf),
                value => column.ty.put_value(value, buf)?,
            }
        }
    }
    Ok(())
}

/// Binds `@name` parameters by name; a missing one is error 137.
fn bind(stmt: &mut rusqlite::Statement<'_>, binds: &[Param]) -> Result<(), ServerMessage> {
    for index in 1..=stmt.parameter_count() {
        let name = stmt.parameter_name(index).unwrap_or("?").to_string();
        let param = binds.iter().find(|p| p.name.eq_ignore_ascii_case(&name));
        let Some(param) = param else {
            return Err(ServerMessage::error(
                137,
                format!("Must declare the scalar variable \"{name}\"."),
            ));
        };
        let result = match &param.value {
            Value::Null => stmt.raw_bind_parameter(index, rusqlite::types::Null),
            Value::Int(i) => stmt.raw_bind_parameter(index, i),
            Value::Float(f) => stmt.raw_bind_parameter(index, f),
            Value::Text(t) => stmt.raw_bind_parameter(index, t),
            Value::Bytes(b) => stmt.raw_bind_parameter(index, b),
        };
        result.map_err(|e| ServerMessage::error(8178, format!("Could not bind {name}: {e}")))?;
    }
    Ok(())
}

/// The DONE CurCmd for a statement.
fn statement_kind(sql: &str) -> u16 {
    let first = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    match first.as_str() {
        "SELECT" | "WITH" | "VALUES" => tokens::CMD_SELECT,
        "INSERT" | "REPLACE" => tokens::CMD_INSERT,
        "UPDATE" => tokens::CMD_UPDATE,
        "DELETE" => tokens::CMD_DELETE,
        _ => tokens::CMD_OTHER,
    }
}

/// Drops `dbo.` and `[dbo].` schema prefixes outside string literals and
/// quoted names (the fake has one schema).
pub(crate) fn strip_dbo(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == q {
                quote = None;
            }
        } else if b == b'\'' || b == b'"' {
            quote = Some(b);
        } else {
            let boundary =
                i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
            if boundary {
                let rest = &sql[i..];
                let prefix_len = ["dbo.", "[dbo]."]
                    .iter()
                    .find(|p| rest.len() >= p.len() && rest[..p.len()].eq_ignore_ascii_case(p))
                    .map(|p| p.len());
                if let Some(len) = prefix_len {
                    i += len;
                    continue;
                }
            }
        }
        // Copy one whole UTF-8 character.
        let ch_len = sql[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&sql[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// The start of a rewritten `SET` statement.
const SESSION_OPTION_PREFIX: &str = "SELECT __session_option(";

/// Statements that open a transaction under `SET IMPLICIT_TRANSACTIONS ON`.
fn opens_implicit_transaction(sql: &str) -> bool {
    let first = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    matches!(
        first.as_str(),
        "INSERT" | "UPDATE" | "DELETE" | "CREATE" | "DROP" | "ALTER" | "REPLACE"
    )
}

/// T-SQL session syntax in SQLite terms, outside string literals and
/// quoted names: `#name` → `temp."#name"` (the session's own table),
/// `##name` → `main."##name"` (global), `SET IMPLICIT_TRANSACTIONS ON|OFF`
/// and `SET NOCOUNT ON|OFF` → a call recording the option (a statement of
/// its own), `BEGIN/COMMIT/ROLLBACK TRAN` → `... TRANSACTION`.
pub(crate) fn session_sql(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 16);
    let mut i = 0;
    let mut quote: Option<u8> = None;
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'@';
    // The words starting at `from`, skipping whitespace, upper-cased.
    let words_at = |from: usize, n: usize| -> (Vec<String>, usize) {
        let mut words = Vec::new();
        let mut j = from;
        while words.len() < n {
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            let start = j;
            while j < bytes.len() && is_ident(bytes[j]) {
                j += 1;
            }
            if start == j {
                break;
            }
            words.push(sql[start..j].to_ascii_uppercase());
        }
        (words, j)
    };
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == q {
                quote = None;
            }
        } else if b == b'\'' || b == b'"' {
            quote = Some(b);
        } else if b == b'[' {
            quote = Some(b']');
        } else if b == b'#' && (i == 0 || !is_ident(bytes[i - 1])) {
            let global = bytes.get(i + 1) == Some(&b'#');
            let start = if global { i + 2 } else { i + 1 };
            let mut end = start;
            while end < bytes.len() && (is_ident(bytes[end]) || bytes[end] == b'#') {
                end += 1;
            }
            if end > start {
                let schema = if global { "main" } else { "temp" };
                out.push_str(&format!("{schema}.\"{}\"", &sql[i..end]));
                i = end;
                continue;
            }
        } else if is_ident(b) && (i == 0 || !is_ident(bytes[i - 1])) {
            let (words, end) = words_at(i, 3);
            let w: Vec<&str> = words.iter().map(String::as_str).collect();
            match w.as_slice() {
                ["SET", option @ ("IMPLICIT_TRANSACTIONS" | "NOCOUNT"), value @ ("ON" | "OFF"), ..] =>
                {
                    let on = u8::from(*value == "ON");
                    out.push_str(&format!(
                        "{SESSION_OPTION_PREFIX}'{}', {on});",
                        option.to_ascii_lowercase()
                    ));
                    i = end;
                    continue;
                }
                ["BEGIN" | "COMMIT" | "ROLLBACK", "TRAN", ..] => {
                    let (first, end) = words_at(i, 2);
                    out.push_str(&format!("{} TRANSACTION", first[0]));
                    i = end;
                    continue;
                }
                _ => {
                    // Copy the whole word.
                    let (_, end) = words_at(i, 1);
                    out.push_str(&sql[i..end]);
                    i = end;
                    continue;
                }
            }
        }
        // Copy one whole UTF-8 character.
        let ch_len = sql[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&sql[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// Maps a SQLite error to the SQL Server error a client would get.
fn map_error(
    e: &rusqlite::Error,
    denied: &Mutex<Option<(&'static str, String)>>,
    database: &str,
) -> ServerMessage {
    let text = e.to_string();
    let quoted = |prefix: &str| {
        text.split_once(prefix)
            .map(|(_, rest)| rest.trim().to_string())
    };
    if let Some(name) = quoted("no such table:") {
        let name = name
            .trim_start_matches("main.")
            .trim_start_matches("temp.")
            .trim_matches('"');
        return ServerMessage::error(208, format!("Invalid object name '{name}'."));
    }
    if let Some(name) = quoted("no such column:") {
        return ServerMessage::error(207, format!("Invalid column name '{name}'."));
    }
    if let Some(name) = quoted("no such function:") {
        return ServerMessage::error(
            195,
            format!("'{name}' is not a recognized built-in function name."),
        );
    }
    if text.contains("syntax error") {
        let near = text
            .split_once("near \"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map_or("", |(near, _)| near);
        return ServerMessage::error(102, format!("Incorrect syntax near '{near}'."));
    }
    if text.contains("incomplete input") {
        return ServerMessage::error(102, "Incorrect syntax near the end of the batch.");
    }
    if text.contains("not authorized") || text.contains("is prohibited") {
        let (action, table) = denied
            .lock()
            .ok()
            .and_then(|d| d.clone())
            .unwrap_or(("SELECT", "?".into()));
        return ServerMessage::error(
            229,
            format!("The {action} permission was denied on the object '{table}', database '{database}', schema 'dbo'."),
        );
    }
    if let Some(target) = quoted("UNIQUE constraint failed:") {
        let table = target.split('.').next().unwrap_or("");
        return ServerMessage::error(
            2627,
            format!("Violation of PRIMARY KEY constraint 'PK_{table}'. Cannot insert duplicate key in object 'dbo.{table}'."),
        );
    }
    if let Some(target) = quoted("NOT NULL constraint failed:") {
        let (table, column) = target.split_once('.').unwrap_or(("", &target));
        return ServerMessage::error(
            515,
            format!("Cannot insert the value NULL into column '{column}', table '{database}.dbo.{table}'; column does not allow nulls. INSERT fails."),
        );
    }
    if let Some(rest) = quoted("table") {
        if let Some(name) = rest.strip_suffix("already exists") {
            return ServerMessage::error(
                2714,
                format!(
                    "There is already an object named '{}' in the database.",
                    name.trim()
                ),
            );
        }
    }
    ServerMessage::error(50000, text)
}

fn register_functions(
    conn: &Connection,
    principal: String,
    database: String,
) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8;
    conn.create_scalar_function(
        "suser_sname",
        0,
        flags | FunctionFlags::SQLITE_DETERMINISTIC,
        move |_| Ok(principal.clone()),
    )?;
    conn.create_scalar_function(
        "db_name",
        0,
        flags | FunctionFlags::SQLITE_DETERMINISTIC,
        move |_| Ok(database.clone()),
    )?;
    let utc_now = |_: &rusqlite::functions::Context<'_>| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let days = (now.as_secs() / 86_400) as i64;
        let ticks = (now.as_secs() % 86_400) * 10_000_000 + now.subsec_nanos() as u64 / 100;
        Ok(format!("{} {}", format_date(days), format_time(ticks)))
    };
    conn.create_scalar_function("sysutcdatetime", 0, flags, utc_now)?;
    conn.create_scalar_function("getutcdate", 0, flags, utc_now)?;
    conn.create_scalar_function("newid", 0, flags, |_| {
        Ok(uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbo_prefixes_are_dropped_outside_literals() {
        assert_eq!(
            strip_dbo("SELECT * FROM dbo.t JOIN [dbo].u ON 1 WHERE x = 'dbo.t' AND mydbo.x = 1"),
            "SELECT * FROM t JOIN u ON 1 WHERE x = 'dbo.t' AND mydbo.x = 1"
        );
        assert_eq!(strip_dbo("SELECT 'é', DBO.x"), "SELECT 'é', x");
    }

    #[test]
    fn session_syntax_is_rewritten_outside_literals() {
        assert_eq!(
            session_sql("CREATE TABLE #t (v int); INSERT INTO #t SELECT x FROM ##g WHERE y = '#t'"),
            "CREATE TABLE temp.\"#t\" (v int); INSERT INTO temp.\"#t\" SELECT x FROM main.\"##g\" WHERE y = '#t'"
        );
        assert_eq!(
            session_sql("set implicit_transactions on\nINSERT INTO t VALUES (1)"),
            "SELECT __session_option('implicit_transactions', 1);\nINSERT INTO t VALUES (1)"
        );
        assert_eq!(
            session_sql("SET NOCOUNT OFF; commit tran"),
            "SELECT __session_option('nocount', 0);; COMMIT TRANSACTION"
        );
        assert_eq!(
            session_sql("UPDATE t SET nocount = 1 WHERE [#x] = @P1"),
            "UPDATE t SET nocount = 1 WHERE [#x] = @P1"
        );
    }

    #[test]
    fn statement_kinds() {
        assert_eq!(statement_kind("  select 1"), tokens::CMD_SELECT);
        assert_eq!(
            statement_kind("INSERT INTO t VALUES (1)"),
            tokens::CMD_INSERT
        );
        assert_eq!(statement_kind("CREATE TABLE t (x)"), tokens::CMD_OTHER);
    }
}
