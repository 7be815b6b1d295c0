//! `-o/--output`: how hpctl prints what it got. `json` (the default: pretty
//! JSON, one object per line for `watch`) and `yaml` print the same shapes; `table` prints the
//! columns kubectl users expect (`NAME GROUP STATUS ADDRESS RESTARTS AGE`), `wide` adds
//! `LABELS IMAGE NODE`, and `name` prints only names, one per line.
//!
//! The format comes from `-o`, else `HPCTL_OUTPUT`, else the `output` of hpctl's config file
//! (`config.rs`), else `json`.

use std::collections::BTreeMap;
use std::io::Write;

use hydroplane_client::proto;
use serde::Serialize;

use crate::output::{RunError, status_name};

/// An output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Pretty JSON (one object per line for `watch`): what scripts and `jq` read.
    #[default]
    Json,
    /// YAML, in the JSON's shape (a document per event for `watch`).
    Yaml,
    /// Columns for people: NAME GROUP STATUS ADDRESS RESTARTS AGE.
    Table,
    /// The table, with LABELS, IMAGE and NODE.
    Wide,
    /// Only the process names, one per line.
    Name,
}

impl Format {
    /// Whether this format is a table (`table` or `wide`).
    pub fn is_table(self) -> bool {
        matches!(self, Format::Table | Format::Wide)
    }
}

/// The columns of `table`.
pub const COLUMNS: [&str; 6] = ["NAME", "GROUP", "STATUS", "ADDRESS", "RESTARTS", "AGE"];

/// The columns `wide` adds.
pub const WIDE_COLUMNS: [&str; 3] = ["LABELS", "IMAGE", "NODE"];

/// What a table shows for an empty cell, as kubectl does.
const NONE: &str = "<none>";

/// The header of a table of processes in `format`, after `first` columns of its own.
pub fn header(format: Format, first: &[&str]) -> Vec<String> {
    let wide: &[&str] = if format == Format::Wide { &WIDE_COLUMNS } else { &[] };
    first.iter().chain(COLUMNS.iter()).chain(wide).map(|column| (*column).to_owned()).collect()
}

/// One process as a table row in `format` (`image` only shows in `wide`), at `now`.
pub fn row(
    format: Format,
    process: &proto::ProcessInfo,
    image: Option<&str>,
    now: jiff::Timestamp,
) -> Vec<String> {
    let addresses: Vec<String> =
        process.socket_addresses.iter().map(|address| format!("{}:{}", address.host, address.port)).collect();
    let mut row = vec![
        process.process_name.clone(),
        process.group.clone().unwrap_or_else(|| NONE.to_owned()),
        status_name(process.status()).to_owned(),
        if addresses.is_empty() { NONE.to_owned() } else { addresses.join(",") },
        process.restart_count.to_string(),
        process.created.as_ref().map_or_else(|| NONE.to_owned(), |created| age(created, now)),
    ];
    if format == Format::Wide {
        row.push(labels(&process.labels));
        row.push(image.unwrap_or(NONE).to_owned());
        row.push(process.node.clone().unwrap_or_else(|| NONE.to_owned()));
    }
    row
}

/// Labels as `key=value,key=value`, as kubectl's `--show-labels`.
fn labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return NONE.to_owned();
    }
    labels.iter().map(|(key, value)| format!("{key}={value}")).collect::<Vec<_>>().join(",")
}

/// How long ago `created` was, as kubectl writes ages: `45s`, `12m`, `5h`, `3d`.
pub fn age(created: &prost_types::Timestamp, now: jiff::Timestamp) -> String {
    let seconds = (now.as_second() - created.seconds).max(0);
    match seconds {
        0..120 => format!("{seconds}s"),
        120..7_200 => format!("{}m", seconds / 60),
        7_200..172_800 => format!("{}h", seconds / 3_600),
        _ => format!("{}d", seconds / 86_400),
    }
}

/// Lays out rows under a header, each column as wide as its widest cell, three spaces apart.
pub fn layout(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        text.push_str(&line(row, &widths));
        text.push('\n');
    }
    text
}

/// One line of a table whose columns are `widths` wide (the last cell unpadded).
pub fn line(row: &[String], widths: &[usize]) -> String {
    let mut text = String::new();
    for (index, cell) in row.iter().enumerate() {
        if index + 1 == row.len() {
            text.push_str(cell);
        } else {
            let width = widths.get(index).copied().unwrap_or(0);
            text.push_str(&format!("{cell:<width$}   "));
        }
    }
    text
}

/// Writes text to stdout, flushed.
pub fn print_text(text: &str) -> Result<(), RunError> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// A value as YAML on stdout.
pub fn print_yaml(value: &impl Serialize) -> Result<(), RunError> {
    let mut text =
        serde_saphyr::to_string(value).map_err(|error| anyhow::anyhow!("cannot write YAML: {error}"))?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    print_text(&text)
}

/// Names, one per line.
pub fn print_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), RunError> {
    let mut text = String::new();
    for name in names {
        text.push_str(name);
        text.push('\n');
    }
    print_text(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_age(seconds_ago: i64, expected: &str) {
        let now = jiff::Timestamp::from_second(1_000_000).expect("a time");
        let created = prost_types::Timestamp { seconds: 1_000_000 - seconds_ago, nanos: 0 };
        assert_eq!(age(&created, now), expected, "{seconds_ago} s ago");
    }

    #[test]
    fn ages_read_as_kubectl_writes_them() {
        check_age(-5, "0s");
        check_age(0, "0s");
        check_age(119, "119s");
        check_age(120, "2m");
        check_age(7_199, "119m");
        check_age(7_200, "2h");
        check_age(172_799, "47h");
        check_age(172_800, "2d");
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let header: Vec<String> = ["NAME", "STATUS"].map(str::to_owned).to_vec();
        let rows = vec![
            ["a-long-name", "RUNNING"].map(str::to_owned).to_vec(),
            ["b", "FAILED"].map(str::to_owned).to_vec(),
        ];
        assert_eq!(
            layout(&header, &rows),
            "NAME          STATUS\na-long-name   RUNNING\nb             FAILED\n"
        );
    }

    #[test]
    fn a_row_shows_none_for_what_is_missing_and_wide_adds_three_columns() {
        let now = jiff::Timestamp::from_second(1_000).expect("a time");
        let process = proto::ProcessInfo {
            process_name: "web".to_owned(),
            status: proto::ProcessStatus::Running.into(),
            socket_addresses: vec![proto::SocketAddress {
                host: "127.0.0.1".to_owned(),
                port: 8000,
                ..Default::default()
            }],
            created: Some(prost_types::Timestamp { seconds: 990, nanos: 0 }),
            labels: [("tier".to_owned(), "web".to_owned())].into(),
            ..Default::default()
        };
        assert_eq!(
            row(Format::Table, &process, Some("i"), now),
            ["web", "<none>", "RUNNING", "127.0.0.1:8000", "0", "10s"]
        );
        assert_eq!(
            row(Format::Wide, &process, Some("python:3.11"), now)[6..],
            ["tier=web", "python:3.11", "<none>"]
        );
        assert_eq!(header(Format::Wide, &["EVENT"]).len(), 10);
    }
}
