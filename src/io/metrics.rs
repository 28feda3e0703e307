//! The metrics log: one JSON object per line (`metrics.jsonl`), as StyleGAN2-ADA's
//! `stats.jsonl`, readable by `pandas.read_json(path, lines=True)`:
//!
//! ```text
//! {"step":100,"epoch":1,"loss_d":1.3862,"loss_g":0.6931}
//! ```
//!
//! `step` comes first and is an integer; the other values are numbers in the order given, with
//! integral values written without a fraction. JSON has no NaN or infinity, so a non-finite
//! value is written as `null` and read back as NaN (a diverged run still logs its step).
//!
//! Each line is written with one `write` call straight to the file (no user-space buffer), so a
//! crash loses at most the line being written, and a torn last line is skipped by
//! [`read_metrics`] and cut off by [`MetricsLog::open`] in append mode.

use super::{create_parent, io_err, output_err, write_atomic};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

/// Append-only JSON-lines metrics log (one object per line: `{"step": N, "epoch": E,
/// "loss_d": ..., ...}`), flushed on each write so a crash loses at most the current line.
#[derive(Debug)]
pub struct MetricsLog {
    file: File,
    path: PathBuf,
}

impl MetricsLog {
    /// Opens the log at `path`, creating it (and its folder) if missing. With `append` the
    /// existing lines are kept (a torn last line left by a crash is cut off first); without it
    /// the file is emptied.
    pub fn open(path: &Path, append: bool) -> Result<Self> {
        create_parent(path)?;
        if append {
            drop_torn_tail(path)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        Ok(MetricsLog {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Opens the log of a run resumed at checkpoint step `step`: drops the lines logged after
    /// it (see [`truncate_metrics_after`]), then opens for appending.
    pub fn resume(path: &Path, step: u64) -> Result<Self> {
        truncate_metrics_after(path, step)?;
        Self::open(path, true)
    }

    /// Appends one line `{"step": step, name: value, ...}`. Names must not be `step` nor
    /// repeat; non-finite values are written as `null`.
    pub fn log(&mut self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        let mut line = format!("{{\"step\":{step}");
        for (i, (name, value)) in values.iter().enumerate() {
            if *name == "step" || values[..i].iter().any(|(n, _)| n == name) {
                return Err(Error::invalid(
                    "MetricsLog::log",
                    format!("metric name `{name}` is reserved or given twice"),
                ));
            }
            line.push(',');
            line.push_str(&serde_json::Value::from(*name).to_string());
            line.push(':');
            line.push_str(&format_value(*value));
        }
        line.push_str("}\n");
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|e| io_err(&self.path, e))
    }

    /// The file this log writes to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A JSON number for `v`: integral values without a fraction, `null` for NaN and infinities.
fn format_value(v: f64) -> String {
    if !v.is_finite() {
        "null".to_string()
    } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
        format!("{}", v as i64)
    } else {
        serde_json::Value::from(v).to_string()
    }
}

/// One parsed line: its step and the other numeric fields.
type Entry = (u64, BTreeMap<String, f64>);

/// Parses one log line; `None` if it is not an object with an integer `step`.
fn parse_line(line: &str) -> Option<Entry> {
    let serde_json::Value::Object(obj) = serde_json::from_str(line).ok()? else {
        return None;
    };
    let step = match obj.get("step")? {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        })?,
        _ => return None,
    };
    let values = obj
        .iter()
        .filter(|(k, _)| k.as_str() != "step")
        .filter_map(|(k, v)| match v {
            serde_json::Value::Number(n) => n.as_f64().map(|f| (k.clone(), f)),
            serde_json::Value::Null => Some((k.clone(), f64::NAN)),
            _ => None, // strings, flags: not plottable, skipped
        })
        .collect();
    Some((step, values))
}

/// The lines of `text` with their byte ranges (without the newline), and whether each parsed.
/// A last line without a newline that does not parse is torn (a write cut short) and left out;
/// any other line that does not parse is an error naming the file and line number.
fn scan(path: &Path, text: &str) -> Result<Vec<(usize, usize, Option<Entry>)>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut lineno = 0;
    while start < text.len() {
        lineno += 1;
        let (end, next, complete) = match text[start..].find('\n') {
            Some(i) => (start + i, start + i + 1, true),
            None => (text.len(), text.len(), false),
        };
        let line = text[start..end].trim();
        if line.is_empty() {
            out.push((start, next, None));
        } else {
            match parse_line(line) {
                Some(e) => out.push((start, next, Some(e))),
                None if !complete => break, // torn last line
                None => {
                    return Err(output_err(
                        path,
                        format!(
                            "line {lineno} is not a metrics record \
                             (a JSON object with an integer \"step\"): {}",
                            truncate_for_msg(line)
                        ),
                    ))
                }
            }
        }
        start = next;
    }
    Ok(out)
}

fn truncate_for_msg(s: &str) -> String {
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(80).collect::<String>())
    } else {
        s.to_string()
    }
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    // A torn write can split a multi-byte character; decode lossily and let parsing decide.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Reads a metrics log back, in file order, skipping a torn last line (a crash mid-write) and
/// blank lines. Each entry is `(step, {name: value})` without `step` itself; `null` values come
/// back as NaN and non-numeric fields are left out. Used to redraw loss plots after a resume.
pub fn read_metrics(path: &Path) -> Result<Vec<(u64, BTreeMap<String, f64>)>> {
    let text = read_text(path)?;
    Ok(scan(path, &text)?
        .into_iter()
        .filter_map(|(_, _, e)| e)
        .collect())
}

/// Removes the entries with step > `step` (and a torn last line), so a run resumed from its
/// checkpoint at `step` continues the log without duplicate steps. A missing file is fine.
///
/// When the dropped lines are all at the end (the usual case) the file is cut in place with one
/// `set_len`; otherwise it is rewritten atomically. Call it before [`MetricsLog::open`] (or use
/// [`MetricsLog::resume`]): a log already open would keep writing to the replaced file.
pub fn truncate_metrics_after(path: &Path, step: u64) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = read_text(path)?;
    let lines = scan(path, &text)?;
    let dropped = |e: &Option<Entry>| matches!(e, Some((s, _)) if *s > step);
    // Bytes before the first dropped line, or all complete lines when none is dropped.
    let first = lines.iter().position(|(_, _, e)| dropped(e));
    let cut = first.map_or_else(|| lines.last().map_or(0, |l| l.1), |i| lines[i].0);
    let tail_all_dropped =
        first.is_none_or(|i| lines[i..].iter().all(|(_, _, e)| e.is_none() || dropped(e)));
    if tail_all_dropped {
        if cut == text.len() {
            return Ok(());
        }
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        f.set_len(cut as u64).map_err(|e| io_err(path, e))?;
        return f.sync_all().map_err(|e| io_err(path, e));
    }
    let mut out = String::with_capacity(text.len());
    for (start, next, e) in &lines {
        if e.is_some() && !dropped(e) {
            out.push_str(text[*start..*next].trim_end_matches('\n'));
            out.push('\n');
        }
    }
    write_atomic(path, out.as_bytes())
}

/// Cuts a torn last line (no newline at the end) off the file at `path`, if there is one.
fn drop_torn_tail(path: &Path) -> Result<()> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path, e)),
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let tail = String::from_utf8_lossy(&bytes[keep..]);
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    if parse_line(tail.trim()).is_some() {
        // A whole record that only lacks its newline: finish it rather than lose it.
        f.seek(std::io::SeekFrom::End(0))
            .and_then(|_| f.write_all(b"\n"))
            .map_err(|e| io_err(path, e))
    } else {
        f.set_len(keep as u64).map_err(|e| io_err(path, e))
    }
}
