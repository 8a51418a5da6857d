//! WMS file drops: a watched folder of CSV exports, each file journaled atomically.
//!
//! Many WMS can only write an export to a share every few minutes. A file is read only
//! once it is complete: names starting with `.` or ending in `.tmp`, `.part` or `~` are
//! being written and skipped, and any other file must keep its size and modification time
//! for `settle_ms` before it is read. Then it is streamed (bounded memory, any size) into
//! one journal savepoint: every row journaled or none. A file with a bad row goes to
//! `failed/` with `<name>.errors.csv` (line, column, reason) and one entry in the rejects
//! queue; a good one goes to `processed/`. The same content dropped again is recognised
//! by its SHA-256 (per input) and not counted twice; rows with an `id` are deduplicated
//! by id across files, like every other input.

mod config;
mod rows;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::input::{self, ClockRule, Context, InputError};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::epcis::{DocumentError, EpcisConfig, EpcisInput};
use crate::catalog::CatalogHandle;
use crate::journal::{Chunk, Journal, JournalError, Reject, StreamSender};
pub use config::{FileFormat, FilesConfig};
use rows::{RowError, Rows};

/// Movements per chunk sent to the journal writer.
const CHUNK: usize = 4096;
/// Largest EPCIS document read from a folder (it is parsed whole, unlike a CSV file).
const MAX_EPCIS_FILE: u64 = 64 << 20;

/// One watched folder.
pub struct FileInput {
    pub config: FilesConfig,
    /// Rules and limits for a folder of EPCIS documents (its own `source` is used).
    pub epcis: EpcisConfig,
    pub warehouse: String,
    pub journal: Journal,
    pub catalog: Arc<CatalogHandle>,
    /// How far ahead of the receiving clock an `occurred_at` may be.
    pub clock: ClockRule,
}

/// What reading a file found.
struct FileRead {
    errors: Vec<RowError>,
    total_errors: usize,
    rows: u64,
}

impl FileInput {
    /// Watches the folder until `shutdown`; a file being processed is finished first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        for sub in ["processed", "failed"] {
            std::fs::create_dir_all(self.config.path.join(sub))?;
        }
        let mut seen = HashMap::new();
        let mut every = tokio::time::interval(Duration::from_millis(self.config.poll_ms.max(10)));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                _ = every.tick() => {}
            }
            let ready = match self.ready(&mut seen) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(folder = %self.config.path.display(), error = %e, "watched folder unreadable");
                    continue;
                }
            };
            for path in ready {
                seen.remove(&path);
                if let Err(e) = self.process(&path).await {
                    // Left in place: read again at a later poll (e.g. once the journal has room).
                    tracing::warn!(file = %path.display(), error = %e, "file not journaled; kept for a retry");
                }
            }
        }
    }

    /// Complete files, oldest name first: not a temp name, size and mtime settled.
    fn ready(
        &self,
        seen: &mut HashMap<PathBuf, (u64, SystemTime, Instant)>,
    ) -> std::io::Result<Vec<PathBuf>> {
        let settle = Duration::from_millis(self.config.settle_ms);
        let mut ready = Vec::new();
        let mut present = Vec::new();
        for entry in std::fs::read_dir(&self.config.path)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let temp =
                name.starts_with('.') || [".tmp", ".part", "~"].iter().any(|s| name.ends_with(s));
            let meta = entry.metadata()?;
            if temp || !meta.is_file() {
                continue;
            }
            let path = entry.path();
            present.push(path.clone());
            let now = (meta.len(), meta.modified()?);
            match seen.get(&path) {
                Some((len, modified, since)) if (*len, *modified) == now => {
                    if since.elapsed() >= settle {
                        ready.push(path);
                    }
                }
                _ => {
                    seen.insert(path, (now.0, now.1, Instant::now()));
                }
            }
        }
        seen.retain(|p, _| present.contains(p));
        ready.sort();
        Ok(ready)
    }

    async fn process(&self, path: &Path) -> anyhow::Result<()> {
        match self.config.format {
            FileFormat::Csv => self.process_csv(path).await,
            FileFormat::Epcis => self.process_epcis(path).await,
        }
    }

    /// An EPCIS document, per event: accepted events are journaled whatever their siblings
    /// do (their eventIDs make a corrected resend safe); a file with a rejected event goes
    /// to `failed/` with its events' errors.
    async fn process_epcis(&self, path: &Path) -> anyhow::Result<()> {
        let len = std::fs::metadata(path)?.len();
        let config = EpcisConfig {
            source: self.config.source.clone(),
            ..self.epcis.clone()
        };
        let input = EpcisInput {
            journal: &self.journal,
            catalog: &self.catalog,
            warehouse: &self.warehouse,
            config: &config,
            reject_source: format!("file:{}", self.config.source),
            input: format!("file:{}", self.config.source),
            clock: self.clock,
        };
        let answer = if len > MAX_EPCIS_FILE {
            let detail =
                format!("{len} bytes exceed the limit of {MAX_EPCIS_FILE} for one EPCIS document");
            let error = InputError {
                record: None,
                field: "$".into(),
                detail,
            };
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let reject = Reject {
                source: input.reject_source.clone(),
                error: error.clone(),
                payload: name.into_bytes(),
            };
            self.journal.reject(reject).await?;
            Err(DocumentError::Invalid(error))
        } else {
            let path = path.to_owned();
            let body = tokio::task::spawn_blocking(move || std::fs::read(path)).await??;
            input.process(&body).await
        };
        let errors: Vec<[String; 3]> = match answer {
            Err(DocumentError::Journal(e)) => return Err(e.into()),
            Err(DocumentError::Malformed(e) | DocumentError::Invalid(e)) => {
                vec![[String::new(), e.field, e.detail]]
            }
            Ok(a) if a.failed > 0 => {
                anyhow::bail!("{} events not journaled; the file is read again", a.failed)
            }
            Ok(a) => a
                .events
                .iter()
                .filter(|e| e["status"] == "rejected")
                .map(|e| {
                    [
                        e["index"].to_string(),
                        e["field"].as_str().unwrap_or("").into(),
                        e["detail"].as_str().unwrap_or("").into(),
                    ]
                })
                .collect(),
        };
        if errors.is_empty() {
            move_into(path, "processed")?;
            return Ok(());
        }
        // The rejected events are in the rejects queue already: only the file is moved.
        let moved = move_into(path, "failed")?;
        write_errors(&moved, ["event", "field", "reason"], &errors, errors.len())?;
        tracing::warn!(file = %moved.display(), rejected = errors.len(), "EPCIS file had rejected events");
        Ok(())
    }

    async fn process_csv(&self, path: &Path) -> anyhow::Result<()> {
        let hash = {
            let path = path.to_owned();
            tokio::task::spawn_blocking(move || content_hash(&path)).await??
        };
        let key = format!("{}:{hash}", self.config.source);
        let (sender, reply) = self.journal.append_stream(key).await?;
        let read = {
            let (path, columns) = (path.to_owned(), self.config.columns.clone());
            let (warehouse, source) = (self.warehouse.clone(), self.config.source.clone());
            let (catalog, max_errors) = (self.catalog.current(), self.config.max_errors);
            let clock = self.clock;
            tokio::task::spawn_blocking(move || {
                // This input speaks for its configured source only.
                let (path_name, sources) = (format!("file:{source}"), [source.clone()]);
                let ctx = Context {
                    warehouse: &warehouse,
                    default_source: &source,
                    now: input::now(),
                    max_batch: usize::MAX,
                    units: &*catalog,
                    input: &path_name,
                    sources: &sources,
                    validated: !catalog.is_open(),
                    clock,
                };
                read_file(&path, &columns, &ctx, sender, max_errors)
            })
            .await??
        };
        let result = reply.await.map_err(|_| JournalError::Closed)?;
        // The same content journaled before is done, even if today's catalog refuses a row.
        let replayed = matches!(&result, Ok(a) if a.replayed);
        if !read.errors.is_empty() && !replayed {
            return self.fail(path, &read).await;
        }
        let appended = match result {
            // A row's id was journaled before with other content: the file is refused. The
            // index counts data rows, so the line is exact unless a quoted field spans lines.
            Err(JournalError::IdReused { index, detail }) => {
                let line = index as u64 + 2;
                let errors = vec![RowError {
                    line,
                    column: "id".into(),
                    reason: detail,
                }];
                let read = FileRead {
                    errors,
                    total_errors: 1,
                    rows: read.rows,
                };
                return self.fail(path, &read).await;
            }
            other => other?,
        };
        tracing::info!(file = %path.display(), rows = read.rows, journaled = appended.journaled, duplicates = appended.duplicates, replayed = appended.replayed, "file journaled");
        move_into(path, "processed")?;
        Ok(())
    }

    /// Moves the file to `failed/`, records one reject, writes its errors beside it.
    async fn fail(&self, path: &Path, read: &FileRead) -> anyhow::Result<()> {
        let moved = move_into(path, "failed")?;
        let name = moved
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let first = &read.errors[0];
        let error = InputError {
            record: Some(first.line as usize),
            field: first.column.clone(),
            detail: format!("line {}: {} ({} errors in the file; moved to failed/{name}, see {name}.errors.csv)", first.line, first.reason, read.total_errors),
        };
        let reject = Reject {
            source: format!("file:{}", self.config.source),
            error,
            payload: name.into_bytes(),
        };
        self.journal.reject(reject).await?;
        // Written last: its presence means the reject is recorded too.
        let rows: Vec<[String; 3]> = read
            .errors
            .iter()
            .map(|e| [e.line.to_string(), e.column.clone(), e.reason.clone()])
            .collect();
        write_errors(
            &moved,
            ["line", "column", "reason"],
            &rows,
            read.total_errors,
        )?;
        tracing::warn!(file = %moved.display(), errors = read.total_errors, "file refused");
        Ok(())
    }
}

/// Writes `<failed file>.errors.csv`: a header and one row per error, then how many more.
fn write_errors(
    moved: &Path,
    header: [&str; 3],
    rows: &[[String; 3]],
    total: usize,
) -> anyhow::Result<()> {
    let name = moved
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Written under a temp name and renamed: a reader never sees half a report.
    let report = moved.with_file_name(format!("{name}.errors.csv"));
    let temp = moved.with_file_name(format!(".{name}.errors.csv.tmp"));
    let mut w = csv::Writer::from_path(&temp)?;
    w.write_record(header)?;
    for row in rows {
        w.write_record(row)?;
    }
    if total > rows.len() {
        w.write_record([
            "",
            "",
            &format!("{} more errors not listed", total - rows.len()),
        ])?;
    }
    w.flush()?;
    drop(w);
    std::fs::rename(&temp, &report)?;
    Ok(())
}

fn content_hash(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Streams the file's valid rows to the journal; on the first bad row the stream is
/// dropped (nothing is journaled) and reading continues only to list the errors.
fn read_file(
    path: &Path,
    columns: &std::collections::BTreeMap<String, String>,
    ctx: &Context<'_>,
    sender: StreamSender,
    max_errors: usize,
) -> std::io::Result<FileRead> {
    let mut read = FileRead {
        errors: Vec::new(),
        total_errors: 0,
        rows: 0,
    };
    let mut rows = match Rows::open(File::open(path)?, columns) {
        Ok(r) => r,
        Err(e) => {
            read.errors.push(e);
            read.total_errors = 1;
            return Ok(read);
        }
    };
    let mut sender = Some(sender);
    let mut chunk = Vec::with_capacity(CHUNK);
    while let Some((line, row)) = rows.next_row() {
        read.rows += 1;
        let movement = row.and_then(|i| {
            let gtin_given = i.sku.len() == 14 && i.sku.bytes().all(|b| b.is_ascii_digit());
            input::validate(i, ctx).map_err(|(field, reason)| RowError {
                line,
                column: rows.column_of(field, gtin_given),
                reason,
            })
        });
        match movement {
            Ok(m) if sender.is_some() => {
                chunk.push(m);
                if chunk.len() == CHUNK {
                    send(&mut sender, std::mem::take(&mut chunk));
                }
            }
            Ok(_) => {}
            Err(e) => {
                sender = None;
                read.total_errors += 1;
                if read.errors.len() < max_errors {
                    read.errors.push(e);
                }
            }
        }
    }
    if sender.is_some() {
        send(&mut sender, chunk);
        if let Some(s) = sender {
            let _ = s.send(Chunk::End);
        }
    }
    Ok(read)
}

/// A failed send means the writer stopped reading (a replayed key or a full journal): its
/// reply says which.
fn send(sender: &mut Option<StreamSender>, chunk: Vec<stocksync_common::Movement>) {
    if let Some(s) = sender {
        if s.send(Chunk::Movements(chunk)).is_err() {
            *sender = None;
        }
    }
}

/// Moves `path` into the sibling folder `sub/`, keeping its name unless one is taken.
fn move_into(path: &Path, sub: &str) -> std::io::Result<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new(".")).join(sub);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut target = dir.join(&name);
    if target.exists() {
        target = dir.join(format!("{name}.{}", input::now().unix_ms));
    }
    std::fs::rename(path, &target)?;
    Ok(target)
}
