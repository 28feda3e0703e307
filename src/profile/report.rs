//! The profile as a table (one device, or several side by side) and as JSON.
//!
//! Layout: one block per part of the step (`D step`, `G step`); in each, one line per layer
//! with its totals, then its ops indented, each with its phase, calls per step, shapes,
//! MFLOP and MB per step (from the formulas), and per device the measured milliseconds,
//! achieved GFLOP/s and share of the measured step. Then the totals, what no row accounts
//! for, the step as measured by the wall clock, and a summary per op over all layers.

use super::driver::{Row, StepProfile};
use super::Phase;
use std::collections::HashMap;
use std::fmt::Write;

/// `64x1x28x28` (`()` for a 0-dim tensor).
fn dims(d: &[usize]) -> String {
    if d.is_empty() {
        "()".to_string()
    } else {
        d.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join("x")
    }
}

/// `64x1x28x28, 64x1x4x4 -> 64x64x14x14`, empty for a row without shapes.
fn shapes(row: &Row) -> String {
    if row.is_outside_ops() {
        return String::new();
    }
    let ins: Vec<String> = row.inputs.iter().map(|d| dims(d)).collect();
    if ins.is_empty() {
        return format!("-> {}", dims(&row.output));
    }
    format!("{} -> {}", ins.join(", "), dims(&row.output))
}

fn num(v: f64, decimals: usize) -> String {
    if v == 0.0 {
        "-".to_string()
    } else {
        format!("{v:.decimals$}")
    }
}

fn calls(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Rows of text cells; column `i` right-aligned when `right[i]`.
struct Table {
    right: Vec<bool>,
    lines: Vec<Option<Vec<String>>>,
}

impl Table {
    fn new(right: Vec<bool>) -> Table {
        Table {
            right,
            lines: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.lines.push(Some(cells));
    }

    fn rule(&mut self) {
        self.lines.push(None);
    }

    fn render(&self, out: &mut String) {
        let n = self.right.len();
        let mut width = vec![0usize; n];
        for cells in self.lines.iter().flatten() {
            for (w, c) in width.iter_mut().zip(cells) {
                *w = (*w).max(c.chars().count());
            }
        }
        let total: usize = width.iter().sum::<usize>() + 2 * (n - 1);
        for line in &self.lines {
            let Some(cells) = line else {
                out.push_str(&"-".repeat(total));
                out.push('\n');
                continue;
            };
            let mut text = String::new();
            for (i, c) in cells.iter().enumerate() {
                let pad = width[i] - c.chars().count();
                if i > 0 {
                    text.push_str("  ");
                }
                if self.right[i] {
                    text.push_str(&" ".repeat(pad));
                    text.push_str(c);
                } else {
                    text.push_str(c);
                    text.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
    }
}

/// The first device's row among `rs` (one entry per device).
fn any<'a>(rs: &[Option<&'a Row>]) -> Option<&'a Row> {
    rs.iter().flatten().next().copied()
}

/// A part of the step and its layers, each with the keys of its rows.
type Section<'a> = (&'a str, Vec<(&'a str, Vec<Key<'a>>)>);

/// The key that matches a row across devices.
type Key<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Phase,
    &'a [Vec<usize>],
    &'a [usize],
);

fn key(r: &Row) -> Key<'_> {
    (&r.section, &r.layer, &r.op, r.phase, &r.inputs, &r.output)
}

/// Per-device cells: ms, GFLOP/s, % of the step (blank when the device has no such row).
fn device_cells(flops: f64, ms: Option<f64>, step_ms: f64) -> [String; 3] {
    match ms {
        None => [String::new(), String::new(), String::new()],
        Some(ms) => [
            format!("{ms:.3}"),
            if flops > 0.0 && ms > 0.0 {
                format!("{:.1}", flops / ms / 1e6)
            } else {
                "-".to_string()
            },
            format!("{:.1}", 100.0 * ms / step_ms),
        ],
    }
}

/// The table of one or more profiles of the same model and batch (e.g. CPU and GPU), side
/// by side. Rows are matched by part of the step, layer, op, phase and shapes.
pub fn render(profiles: &[StepProfile]) -> String {
    let mut out = String::new();
    let Some(first) = profiles.first() else {
        return out;
    };
    let _ = writeln!(
        out,
        "ganforge profile: {}, batch {}, {}; {} profiled step{} (each a D and a G update{}) after {} warm-up step{}",
        first.model,
        first.batch_size,
        first.data,
        first.steps,
        if first.steps == 1 { "" } else { "s" },
        if first.n_critic > 1 {
            format!(", the {}th call of n_critic = {}", first.n_critic, first.n_critic)
        } else {
            String::new()
        },
        first.warmup,
        if first.warmup == 1 { "" } else { "s" },
    );
    for p in profiles {
        let _ = writeln!(out, "  {}: {}", p.device, p.device_info);
    }
    out.push_str(
        "FLOPs from each op's formula (a multiply-add = 2); MB = inputs read once + output \
         written once (f32); ms measured per op\n(on a GPU with a wait before and after each \
         op); % = share of the wall-clock step. Phases: fwd, bwd, bwd2 (double backward), opt.\n\n",
    );

    // Every row key, in order of first appearance over the profiles, grouped by section and
    // layer (also in order of first appearance).
    let maps: Vec<HashMap<Key<'_>, &Row>> = profiles
        .iter()
        .map(|p| p.rows.iter().map(|r| (key(r), r)).collect())
        .collect();
    let mut sections: Vec<Section<'_>> = Vec::new();
    let mut seen: std::collections::HashSet<Key<'_>> = std::collections::HashSet::new();
    for p in profiles {
        for r in &p.rows {
            let k = key(r);
            if !seen.insert(k) {
                continue;
            }
            let si = match sections.iter().position(|(s, _)| *s == r.section) {
                Some(i) => i,
                None => {
                    sections.push((&r.section, Vec::new()));
                    sections.len() - 1
                }
            };
            let layers = &mut sections[si].1;
            match layers.iter_mut().find(|(l, _)| *l == r.layer) {
                Some((_, keys)) => keys.push(k),
                None => layers.push((&r.layer, vec![k])),
            }
        }
    }

    let mut right = vec![false, false, true, false, true, true];
    let mut header: Vec<String> = [
        "layer / op",
        "phase",
        "n",
        "shapes (in -> out)",
        "MFLOP",
        "MB",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    device_columns(profiles, &mut right, &mut header);
    let mut table = Table::new(right);
    table.row(header);
    let lookup =
        |k: &Key<'_>| -> Vec<Option<&Row>> { maps.iter().map(|m| m.get(k).copied()).collect() };
    for (section, layers) in &sections {
        table.rule();
        let in_section = |p: &StepProfile, f: &dyn Fn(&Row) -> f64| -> f64 {
            p.rows.iter().filter(|r| r.section == *section).map(f).sum()
        };
        let mut cells = vec![format!("[{section}]")];
        cells.resize(4, String::new());
        cells.push(num(in_section(first, &|r| r.flops) / 1e6, 1));
        cells.push(num(in_section(first, &|r| r.bytes) / 1e6, 2));
        for p in profiles {
            let ms: f64 = p
                .rows
                .iter()
                .filter(|r| r.section == *section)
                .map(|r| r.ms)
                .sum();
            let flops: f64 = p
                .rows
                .iter()
                .filter(|r| r.section == *section)
                .map(|r| r.flops)
                .sum();
            cells.extend(device_cells(flops, Some(ms), p.step_ms));
        }
        table.row(cells);
        for (layer, keys) in layers {
            // The layer line: totals over its ops (from the first profile that has each).
            let rows: Vec<Vec<Option<&Row>>> = keys.iter().map(&lookup).collect();
            let flops: f64 = rows.iter().filter_map(|rs| any(rs)).map(|r| r.flops).sum();
            let bytes: f64 = rows.iter().filter_map(|rs| any(rs)).map(|r| r.bytes).sum();
            let mut cells = vec![
                layer.to_string(),
                String::new(),
                String::new(),
                String::new(),
                num(flops / 1e6, 1),
                num(bytes / 1e6, 2),
            ];
            for (d, p) in profiles.iter().enumerate() {
                let ms: f64 = rows.iter().filter_map(|rs| rs[d]).map(|r| r.ms).sum();
                let f: f64 = rows.iter().filter_map(|rs| rs[d]).map(|r| r.flops).sum();
                cells.extend(device_cells(f, Some(ms), p.step_ms));
            }
            table.row(cells);
            for rs in &rows {
                let Some(r) = any(rs) else { continue };
                let mut cells = vec![
                    format!("  {}", r.op),
                    r.phase.label().to_string(),
                    calls(r.calls),
                    shapes(r),
                    num(r.flops / 1e6, 1),
                    num(r.bytes / 1e6, 2),
                ];
                for (d, p) in profiles.iter().enumerate() {
                    cells.extend(device_cells(r.flops, rs[d].map(|r| r.ms), p.step_ms));
                }
                table.row(cells);
            }
        }
    }

    // Totals.
    table.rule();
    let total_row = |label: &str,
                     flops: Option<f64>,
                     bytes: Option<f64>,
                     ms: &dyn Fn(&StepProfile) -> Option<f64>| {
        let mut cells = vec![
            label.to_string(),
            String::new(),
            String::new(),
            String::new(),
            flops.map(|f| num(f / 1e6, 1)).unwrap_or_default(),
            bytes.map(|b| num(b / 1e6, 2)).unwrap_or_default(),
        ];
        for p in profiles {
            let gflop_basis = flops.unwrap_or(0.0);
            cells.extend(device_cells(gflop_basis, ms(p), p.step_ms));
        }
        cells
    };
    table.row(total_row(
        "all rows (ops + time outside ops)",
        Some(first.flops()),
        Some(first.bytes()),
        &|p| Some(p.rows_ms()),
    ));
    table.row(total_row("unattributed (step - rows)", None, None, &|p| {
        Some(p.unattributed_ms())
    }));
    table.row(total_row(
        "step, measured (wall clock)",
        Some(first.flops()),
        None,
        &|p| Some(p.step_ms),
    ));
    table.render(&mut out);
    for p in profiles {
        if let Some(u) = p.unprofiled_step_ms {
            let _ = writeln!(
                out,
                "{}: the same step without the profiler (last warm-up step) took {u:.3} ms; \
                 profiled {:.3} ms ({:+.1}%)",
                p.device,
                p.step_ms,
                100.0 * (p.step_ms - u) / u
            );
        }
        if !p.untimed_ops.is_empty() {
            let _ = writeln!(
                out,
                "{}: warning: ops ran outside any op timer (their time is unattributed): {}",
                p.device,
                p.untimed_ops.join(", ")
            );
        }
    }

    // Per op, over all layers.
    out.push('\n');
    let mut right = vec![false, true, true, true];
    let mut header: Vec<String> = ["op (all layers, fwd + bwd + opt)", "n", "MFLOP", "MB"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    device_columns(profiles, &mut right, &mut header);
    let mut ops: Vec<&str> = Vec::new();
    for p in profiles {
        for r in &p.rows {
            if !ops.contains(&r.base_op()) {
                ops.push(r.base_op());
            }
        }
    }
    let per_op = |p: &StepProfile, op: &str| -> (f64, f64, f64, f64) {
        p.rows
            .iter()
            .filter(|r| r.base_op() == op)
            .fold((0.0, 0.0, 0.0, 0.0), |a, r| {
                (a.0 + r.calls, a.1 + r.flops, a.2 + r.bytes, a.3 + r.ms)
            })
    };
    // Sorted by the first profile's time, largest first.
    ops.sort_by(|a, b| per_op(first, b).3.total_cmp(&per_op(first, a).3));
    let mut table = Table::new(right);
    table.row(header);
    table.rule();
    for op in ops {
        let (n, flops, bytes, _) = profiles
            .iter()
            .map(|p| per_op(p, op))
            .find(|t| t.0 > 0.0)
            .unwrap_or_default();
        let mut cells = vec![
            op.to_string(),
            calls(n),
            num(flops / 1e6, 1),
            num(bytes / 1e6, 2),
        ];
        for p in profiles {
            let (n, f, _, ms) = per_op(p, op);
            cells.extend(device_cells(f, (n > 0.0).then_some(ms), p.step_ms));
        }
        table.row(cells);
    }
    table.render(&mut out);
    out
}

/// The profiles as pretty-printed JSON (an array of [`StepProfile`]).
pub fn to_json(profiles: &[StepProfile]) -> String {
    serde_json::to_string_pretty(profiles).expect("profiles serialise")
}

/// The three columns each profiled device adds to a table: its ms, GFLOP/s and share.
fn device_columns(profiles: &[StepProfile], right: &mut Vec<bool>, header: &mut Vec<String>) {
    for p in profiles {
        right.extend([true, true, true]);
        header.extend([
            format!("{} ms", p.device),
            "GFLOP/s".to_string(),
            "%".to_string(),
        ]);
    }
}
