//! Running one query and streaming its results.
//!
//! The query runs as `sp_executesql` with the text in `@stmt` and every
//! parameter bound as `@Pn` (declared in `@params`), so parameters are data,
//! never SQL. A task, on a blocking-pool thread of its own (at most
//! [`MAX_READERS`](super::pool::MAX_READERS) at once), reads the result with
//! tiberius and sends events into a bounded channel of
//! `sql.stream_buffer_batches` entries: when the caller reads slowly the task
//! stops reading, TCP fills up and the server waits, so the gateway never
//! holds more than a few batches. [`SqlMetrics`] counts the
//! batches produced and not yet taken (the `batches_buffered` gauge).
//!
//! A batch is sent when it holds `sql.batch_rows` rows or `sql.batch_bytes`
//! bytes, or as soon as the server pauses: a slow query's rows reach the
//! caller as they come, a fast one's in full batches.
//!
//! When the caller goes away, the query times out or the gateway shuts
//! down (the caller then gets UNAVAILABLE), the task sends
//! ATTENTION so the server stops, and drops the connection rather than
//! returning it to the pool. A `max_rows` cut also sends ATTENTION but keeps
//! the connection once the server acknowledged it.

use std::{
    future::Future,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{FutureExt, Stream, TryStreamExt};
use tiberius::{ColumnData, Command, CommandItem};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::pool::SqlPools;
use super::{
    client::Connection,
    pool::Lease,
    server_error,
    value::{bind_value, type_name, with_cell},
    SqlColumn, SqlEvent, SqlMetrics, SqlQuery, SqlRows,
};
use crate::error::GatewayError;

/// How long a stopped query may take to acknowledge ATTENTION.
const ATTENTION_WAIT: Duration = Duration::from_secs(5);

/// A row batch counted in the `batches_buffered` gauge until it is taken.
struct BatchSlot(Arc<SqlMetrics>);

impl BatchSlot {
    fn new(metrics: &Arc<SqlMetrics>) -> Self {
        let now = metrics.batches_buffered.fetch_add(1, Ordering::AcqRel) + 1;
        metrics
            .batches_buffered_max
            .fetch_max(now, Ordering::AcqRel);
        Self(Arc::clone(metrics))
    }
}

impl Drop for BatchSlot {
    fn drop(&mut self) {
        self.0.batches_buffered.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Item {
    event: Result<SqlEvent, GatewayError>,
    _slot: Option<BatchSlot>,
}

/// The events of one query, in order; ends after `Done` or an error.
pub struct SqlEventStream {
    rx: mpsc::Receiver<Item>,
}

impl std::fmt::Debug for SqlEventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlEventStream").finish_non_exhaustive()
    }
}

impl Stream for SqlEventStream {
    type Item = Result<SqlEvent, GatewayError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // The batch leaves the gauge as it is handed over.
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|item| item.event))
    }
}

/// Why streaming stopped before the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The caller went away.
    Cancelled,
    /// The server did not answer within the query timeout.
    Timeout,
    /// The caller's deadline passed.
    Deadline,
    /// The gateway is shutting down.
    Shutdown,
}

enum Finish {
    Complete,
    Truncated,
}

enum Abort {
    Stop(Stop),
    /// A server error, read to the end of the response: the connection is fine.
    Server(GatewayError),
    /// The connection broke; `before_output` when nothing reached the caller.
    Broken {
        error: GatewayError,
        before_output: bool,
    },
}

/// Logs in (or takes a pooled connection), starts the query and returns its
/// event stream. Errors up to the login come back here; errors of the query
/// itself arrive on the stream.
pub async fn query(
    sql: Arc<SqlPools>,
    query: SqlQuery,
    deadline: Option<Instant>,
) -> Result<SqlEventStream, GatewayError> {
    let params = query
        .params
        .iter()
        .enumerate()
        .map(|(i, v)| bind_value(v, &format!("parameters[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let turn = sql.reader_turn(deadline).await?;
    let lease = sql
        .lease(
            &query.target,
            &query.identity,
            query.caller.as_ref(),
            deadline,
        )
        .await?;
    let (tx, rx) = mpsc::channel(sql.config().stream_buffer_batches.max(1));
    // Reading a result is CPU-bound (TLS, TDS decoding, one cell after
    // another, rarely waiting for the server), so it runs on a thread of its
    // own rather than on an async worker: there it would hold the worker for
    // a whole budget of reads at a time, delaying other calls' tasks, and
    // take turns with the task that encodes its batches instead of running
    // beside it (QuerySql 7 % faster, BENCHMARKS.md). The runtime's I/O and
    // timers still drive it.
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        runtime.block_on(run(sql, query, params, lease, tx, deadline));
        drop(turn);
    });
    Ok(SqlEventStream { rx })
}

async fn run(
    sql: Arc<SqlPools>,
    query: SqlQuery,
    params: Vec<(ColumnData<'static>, String)>,
    mut lease: Lease,
    tx: mpsc::Sender<Item>,
    deadline: Option<Instant>,
) {
    let metrics = sql.metrics_handle();
    let batching = Batching {
        rows: sql.config().batch_rows.max(1),
        bytes: sql.config().batch_bytes.max(1024),
    };
    let mut retried = false;
    loop {
        let outcome = match lease.conn() {
            Some(conn) => {
                stream_once(conn, &query, &params, &tx, deadline, batching, &metrics).await
            }
            None => Err(Abort::Broken {
                error: GatewayError::Unavailable("no SQL connection".into()),
                before_output: false,
            }),
        };
        match outcome {
            Ok(Finish::Complete) => lease.release(),
            Ok(Finish::Truncated) => {
                if attention(&mut lease, &metrics).await {
                    lease.release();
                }
            }
            Err(Abort::Stop(stop)) => {
                let error = match stop {
                    Stop::Cancelled => None,
                    Stop::Timeout => Some(GatewayError::DeadlineExceeded(format!(
                        "the SQL server did not answer within the query timeout ({:?})",
                        query.timeout
                    ))),
                    Stop::Deadline => Some(GatewayError::DeadlineExceeded(
                        "the caller's deadline passed while the query was running".into(),
                    )),
                    Stop::Shutdown => Some(GatewayError::Unavailable(
                        "the gateway is shutting down; the query was stopped".into(),
                    )),
                };
                if let Some(error) = error {
                    let item = Item {
                        event: Err(error),
                        _slot: None,
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(item)).await;
                }
                drop(tx);
                // The server may still be producing rows: stop it, and do not
                // reuse a connection left in the middle of a response.
                attention(&mut lease, &metrics).await;
                drop(lease.take());
            }
            Err(Abort::Server(error)) => {
                lease.release();
                let _ = tx
                    .send(Item {
                        event: Err(error),
                        _slot: None,
                    })
                    .await;
            }
            Err(Abort::Broken {
                before_output: true,
                ..
            }) if lease.reused && !retried => {
                // A pooled connection that died while idle (server restart,
                // idle cut-off): its siblings likely did too. Log in afresh once.
                retried = true;
                drop(lease);
                lease = match sql
                    .lease_fresh(
                        &query.target,
                        &query.identity,
                        query.caller.as_ref(),
                        deadline,
                    )
                    .await
                {
                    Ok(fresh) => fresh,
                    Err(error) => {
                        let _ = tx
                            .send(Item {
                                event: Err(error),
                                _slot: None,
                            })
                            .await;
                        return;
                    }
                };
                continue;
            }
            Err(Abort::Broken { error, .. }) => {
                drop(lease);
                let _ = tx
                    .send(Item {
                        event: Err(error),
                        _slot: None,
                    })
                    .await;
            }
        }
        return;
    }
}

/// Sends ATTENTION and waits for the acknowledgement; true when the
/// connection is clean again.
async fn attention(lease: &mut Lease, metrics: &SqlMetrics) -> bool {
    let Some(conn) = lease.conn() else {
        return false;
    };
    metrics.attentions.fetch_add(1, Ordering::Relaxed);
    // tiberius writes ATTENTION first, then reads up to its acknowledgement;
    // reading fails if the dropped result stream stopped inside a token, but
    // the server has been told to stop either way.
    matches!(
        tokio::time::timeout(ATTENTION_WAIT, conn.cancel_query()).await,
        Ok(Ok(()))
    )
}

/// Where one query's events go, and what stops sending them: the caller
/// going away, the caller's deadline, the gateway's shutdown.
struct Events<'a> {
    tx: &'a mpsc::Sender<Item>,
    deadline: Option<Instant>,
    shutdown: &'a CancellationToken,
    metrics: &'a Arc<SqlMetrics>,
    batch_rows: usize,
}

impl Events<'_> {
    /// Waits for the server, bounded by the query timeout and the caller's
    /// deadline, and gives up as soon as the caller goes away or the gateway
    /// shuts down.
    async fn wait<F: Future>(&self, fut: F, timeout: Duration) -> Result<F::Output, Abort> {
        let limit = Instant::now() + timeout;
        let (until, stop) = match self.deadline {
            Some(d) if d < limit => (d, Stop::Deadline),
            _ => (limit, Stop::Timeout),
        };
        tokio::select! {
            out = tokio::time::timeout_at(until.into(), fut) => out.map_err(|_| Abort::Stop(stop)),
            _ = self.tx.closed() => Err(Abort::Stop(Stop::Cancelled)),
            () = self.shutdown.cancelled() => Err(Abort::Stop(Stop::Shutdown)),
        }
    }

    /// Sends one event that is not a row batch.
    async fn send(&self, event: SqlEvent) -> Result<(), Abort> {
        self.send_item(Item {
            event: Ok(event),
            _slot: None,
        })
        .await
    }

    /// Sends the rows collected so far as one batch.
    async fn flush(&self, batch: &mut SqlRows, result_set: u32) -> Result<(), Abort> {
        if batch.is_empty() {
            return Ok(());
        }
        // The next batch likely has as many cells: reserve them once.
        let next = SqlRows::with_capacity(self.batch_rows, batch.cell_count(), batch.text_len());
        let rows = std::mem::replace(batch, next);
        self.send_item(Item {
            event: Ok(SqlEvent::Rows { result_set, rows }),
            _slot: Some(BatchSlot::new(self.metrics)),
        })
        .await
    }

    /// Sends one item, waiting while the channel is full (backpressure), but
    /// not past the caller's deadline or the gateway's shutdown.
    async fn send_item(&self, item: Item) -> Result<(), Abort> {
        let sent = async {
            match self.deadline {
                None => Ok(self.tx.send(item).await),
                Some(at) => tokio::time::timeout_at(at.into(), self.tx.send(item))
                    .await
                    .map_err(|_| Stop::Deadline),
            }
        };
        let stopped = tokio::select! {
            // A shutdown wins even when the channel has room.
            biased;
            () = self.shutdown.cancelled() => Stop::Shutdown,
            sent = sent => match sent {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(_)) => Stop::Cancelled,
                Err(stop) => stop,
            },
        };
        Err(Abort::Stop(stopped))
    }
}

fn broken(e: tiberius::error::Error, before_output: bool) -> Abort {
    match e {
        tiberius::error::Error::Server(token) => Abort::Server(server_error(
            token.code(),
            token.message(),
            "Azure SQL refused the query",
        )),
        other => Abort::Broken {
            error: GatewayError::Unavailable(format!(
                "the connection to the SQL server failed: {other}"
            )),
            before_output,
        },
    }
}

/// Runs the query on `conn` and streams its events.
async fn stream_once(
    conn: &mut Connection,
    query: &SqlQuery,
    params: &[(ColumnData<'static>, String)],
    tx: &mpsc::Sender<Item>,
    deadline: Option<Instant>,
    batching: Batching,
    metrics: &Arc<SqlMetrics>,
) -> Result<Finish, Abort> {
    let batch_rows = batching.rows;
    let events = Events {
        tx,
        deadline,
        shutdown: &query.shutdown,
        metrics,
        batch_rows,
    };
    let mut batch_bytes = 0usize;
    let mut command = Command::new("sp_executesql");
    command.bind_param("@stmt", query.text.clone());
    let declarations: Vec<String> = params
        .iter()
        .enumerate()
        .map(|(i, (_, decl))| format!("@P{} {decl}", i + 1))
        .collect();
    command.bind_param("@params", declarations.join(","));
    for (i, (data, _)) in params.iter().enumerate() {
        command.bind_param(format!("@P{}", i + 1), data.clone());
    }
    let mut stream = events
        .wait(command.exec(conn), query.timeout)
        .await?
        .map_err(|e| broken(e, true))?;

    let mut output = false;
    let mut result_set = 0u32;
    let mut rows_per_result_set: Vec<u64> = Vec::new();
    let mut rows_affected: Vec<u64> = Vec::new();
    let mut in_result = false;
    let mut total = 0u64;
    let mut batch = SqlRows::with_capacity(batch_rows, 0, 0);

    loop {
        // Most rows are already buffered: take them without arming timers.
        let next = match stream.try_next().now_or_never() {
            Some(item) => item,
            None => {
                // The server is still computing: hand over the rows read so
                // far instead of holding them until a batch is full.
                if !batch.is_empty() {
                    batch_bytes = 0;
                    events.flush(&mut batch, result_set).await?;
                }
                events.wait(stream.try_next(), query.timeout).await?
            }
        };
        let item = match next {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => return Err(broken(e, !output)),
        };
        match item {
            CommandItem::Metadata(meta) => {
                batch_bytes = 0;
                events.flush(&mut batch, result_set).await?;
                result_set = meta.result_index() as u32;
                let columns = meta
                    .columns()
                    .iter()
                    .map(|c| SqlColumn {
                        name: c.name().to_string(),
                        type_name: type_name(c.column_type()).to_string(),
                        nullable: true,
                    })
                    .collect();
                rows_per_result_set.push(0);
                in_result = true;
                output = true;
                let event = SqlEvent::Columns {
                    result_set,
                    columns,
                };
                events.send(event).await?;
            }
            CommandItem::Row(row) => {
                if query.max_rows > 0 && total == query.max_rows {
                    events.flush(&mut batch, result_set).await?;
                    let done = SqlEvent::Done {
                        rows_per_result_set,
                        rows_affected,
                        truncated: true,
                    };
                    events.send(done).await?;
                    return Ok(Finish::Truncated);
                }
                // Cells are copied from the row, which is freed here, on the
                // thread that allocated it.
                for (_, data) in row.cells() {
                    batch_bytes += with_cell(data, |cell| batch.push_cell(cell));
                }
                batch.end_row();
                total += 1;
                if let Some(count) = rows_per_result_set.last_mut() {
                    *count += 1;
                }
                // Whichever bound comes first: a batch of wide rows stays
                // well under the clients' 4 MiB message limit.
                if batch.len() >= batch_rows || batch_bytes >= batching.bytes {
                    batch_bytes = 0;
                    events.flush(&mut batch, result_set).await?;
                }
            }
            CommandItem::RowsAffected(n) => {
                if in_result {
                    // The DONE closing a result set counts its rows.
                    in_result = false;
                } else {
                    rows_affected.push(n);
                }
            }
            CommandItem::ReturnStatus(_) | CommandItem::ReturnValue(_) => {}
        }
    }
    events.flush(&mut batch, result_set).await?;
    let done = SqlEvent::Done {
        rows_per_result_set,
        rows_affected,
        truncated: false,
    };
    events.send(done).await?;
    Ok(Finish::Complete)
}

/// When a batch of rows is sent: at `rows` rows or `bytes` bytes of values.
#[derive(Debug, Clone, Copy)]
struct Batching {
    rows: usize,
    bytes: usize,
}
