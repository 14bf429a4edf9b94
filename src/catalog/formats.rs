//! Catalog formats: a file -> raw records (line number + JSON field map) for the validator.
//!
//! Generic formats (`jsonl`, `csv`, `tsv` with a header row naming product fields) and
//! adapters for the shared research data, each mapping its columns to product fields:
//! `multicpr` (`pid<TAB>title`), `taobao` (daily snapshots; the latest row per id wins,
//! the shop is the brand) and `openbg` (title, brand, categories, `k=v;k=v` attributes).

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A catalog file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line, with product fields.
    Jsonl,
    /// Comma-separated with a header row of product field names.
    Csv,
    /// Tab-separated with a header row of product field names.
    Tsv,
    /// Multi-CPR corpus: `pid<TAB>title`, no header.
    Multicpr,
    /// Taobao cosmetics snapshots: `update_time,id,title,price,sale_count,comment_count,店名`.
    Taobao,
    /// OpenBG products: `title, brand, category_coarse, category_fine, attributes` (TSV).
    Openbg,
}

impl FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "jsonl" | "ndjson" | "json" => Format::Jsonl,
            "csv" => Format::Csv,
            "tsv" => Format::Tsv,
            "multicpr" => Format::Multicpr,
            "taobao" => Format::Taobao,
            "openbg" => Format::Openbg,
            other => {
                return Err(Error::param(
                    "format",
                    format!(
                        "unknown format `{other}`; use jsonl, csv, tsv, multicpr, taobao or openbg"
                    ),
                ))
            }
        })
    }
}

impl Format {
    /// The format implied by a file name's extension.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        ext.parse().map_err(|_| {
            Error::param(
                "format",
                format!(
                    "cannot tell the format of {} from its extension; pass --format",
                    path.display()
                ),
            )
        })
    }
}

/// One record before validation.
#[derive(Debug)]
pub struct RawRecord {
    /// 1-based line number in the file.
    pub line: usize,
    /// Field map, or why the line could not be read at all.
    pub fields: Result<Map<String, Value>, String>,
}

/// Reads every record of a catalog file.
pub fn read_records(path: &Path, format: Format) -> Result<Vec<RawRecord>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad_file = |reason: String| Error::BadCatalogFile {
        path: path.to_path_buf(),
        reason,
    };
    match format {
        Format::Jsonl => Ok(jsonl(&bytes)),
        Format::Csv => delimited(&bytes, b',', None).map_err(bad_file),
        Format::Tsv => delimited(&bytes, b'\t', None).map_err(bad_file),
        Format::Multicpr => delimited(&bytes, b'\t', Some(&["id", "title"])).map_err(bad_file),
        Format::Taobao => taobao(&bytes).map_err(bad_file),
        Format::Openbg => openbg(&bytes).map_err(bad_file),
    }
}

fn jsonl(bytes: &[u8]) -> Vec<RawRecord> {
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let fields = match std::str::from_utf8(raw) {
            Err(e) => Err(format!("not valid UTF-8 (byte {})", e.valid_up_to())),
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => Ok(map),
                Ok(other) => Err(format!("expected a JSON object, got {}", kind(&other))),
                Err(e) => {
                    let msg = e.to_string();
                    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                    Err(format!("malformed JSON at column {}: {msg}", e.column()))
                }
            },
        };
        out.push(RawRecord { line, fields });
    }
    out
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One row of a delimited file: its line and its cells, or why it cannot be read.
type Row = (usize, Result<Vec<String>, String>);

/// Column names and rows of a delimited file; `header` replaces a header row.
fn rows(
    bytes: &[u8],
    delimiter: u8,
    header: Option<&[&str]>,
) -> Result<(Vec<String>, Vec<Row>), String> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(header.is_none())
        .flexible(true)
        .quoting(delimiter == b',')
        .from_reader(bytes);
    let names: Vec<String> = match header {
        Some(h) => h.iter().map(|s| s.to_string()).collect(),
        None => {
            let h = reader
                .byte_headers()
                .map_err(|e| format!("cannot read the header row: {e}"))?;
            h.iter()
                .map(|f| {
                    String::from_utf8_lossy(f)
                        .trim()
                        .trim_start_matches('\u{feff}')
                        .to_string()
                })
                .collect()
        }
    };
    let mut out = Vec::new();
    for record in reader.byte_records() {
        match record {
            Ok(r) => {
                let line = r.position().map_or(0, |p| p.line() as usize);
                let cells: Result<Vec<String>, String> = r
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        String::from_utf8(f.to_vec())
                            .map_err(|_| format!("column {} is not valid UTF-8", i + 1))
                    })
                    .collect();
                let cells = cells.and_then(|c| {
                    if c.len() == names.len() || (c.len() == 1 && c[0].is_empty()) {
                        Ok(c)
                    } else {
                        Err(format!(
                            "expected {} columns, found {}",
                            names.len(),
                            c.len()
                        ))
                    }
                });
                if matches!(&cells, Ok(c) if c.iter().all(|v| v.trim().is_empty())) {
                    continue;
                }
                out.push((line, cells));
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                out.push((line, Err(format!("unreadable row: {e}"))));
            }
        }
    }
    Ok((names, out))
}

fn delimited(
    bytes: &[u8],
    delimiter: u8,
    header: Option<&[&str]>,
) -> Result<Vec<RawRecord>, String> {
    let (names, rows) = rows(bytes, delimiter, header)?;
    Ok(rows
        .into_iter()
        .map(|(line, cells)| RawRecord {
            line,
            fields: cells.map(|cells| {
                names
                    .iter()
                    .zip(cells)
                    .filter(|(_, v)| !v.trim().is_empty())
                    .map(|(k, v)| (k.clone(), Value::String(v)))
                    .collect()
            }),
        })
        .collect())
}

fn column(names: &[String], name: &str) -> Result<usize, String> {
    names
        .iter()
        .position(|n| n == name)
        .ok_or_else(|| format!("missing column `{name}` (found: {})", names.join(", ")))
}

fn taobao(bytes: &[u8]) -> Result<Vec<RawRecord>, String> {
    let (names, rows) = rows(bytes, b',', None)?;
    let col = |n: &str| column(&names, n);
    let (date, id, title, price, sales, shop) = (
        col("update_time")?,
        col("id")?,
        col("title")?,
        col("price")?,
        col("sale_count")?,
        col("店名")?,
    );
    // Latest snapshot per id; ties keep the later row.
    let mut latest: HashMap<String, (i64, usize, Vec<String>)> = HashMap::new();
    let mut out = Vec::new();
    for (line, cells) in rows {
        let cells = match cells {
            Ok(c) => c,
            Err(reason) => {
                out.push(RawRecord {
                    line,
                    fields: Err(reason),
                });
                continue;
            }
        };
        let Some(day) = parse_day(&cells[date]) else {
            out.push(RawRecord {
                line,
                fields: Err(format!(
                    "update_time `{}` is not a YYYY/MM/DD date",
                    cells[date]
                )),
            });
            continue;
        };
        let key = cells[id].clone();
        if latest.get(&key).is_none_or(|(d, _, _)| day >= *d) {
            latest.insert(key, (day, line, cells));
        }
    }
    let mut chosen: Vec<_> = latest.into_values().collect();
    chosen.sort_by_key(|(_, line, _)| *line);
    for (day, line, c) in chosen {
        let mut m = Map::new();
        m.insert("id".into(), Value::String(c[id].clone()));
        m.insert("title".into(), Value::String(c[title].clone()));
        m.insert("brand".into(), Value::String(c[shop].clone()));
        m.insert("shop".into(), Value::String(c[shop].clone()));
        m.insert("updated_at".into(), Value::from(day));
        if !c[price].trim().is_empty() {
            m.insert("price".into(), Value::String(c[price].clone()));
        }
        if !c[sales].trim().is_empty() {
            m.insert("sales".into(), Value::String(c[sales].clone()));
        }
        out.push(RawRecord {
            line,
            fields: Ok(m),
        });
    }
    out.sort_by_key(|r| r.line);
    Ok(out)
}

/// `YYYY/MM/DD` (or with `-`) -> Unix seconds at midnight UTC.
fn parse_day(s: &str) -> Option<i64> {
    let mut parts = s.trim().split(['/', '-']).map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || parts.next().is_some() {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400)
}

fn openbg(bytes: &[u8]) -> Result<Vec<RawRecord>, String> {
    let (names, rows) = rows(bytes, b'\t', None)?;
    let col = |n: &str| column(&names, n);
    let (title, brand, coarse, fine, attrs) = (
        col("title")?,
        col("brand")?,
        col("category_coarse")?,
        col("category_fine")?,
        col("attributes")?,
    );
    Ok(rows
        .into_iter()
        .map(|(line, cells)| RawRecord {
            line,
            fields: cells.map(|c| {
                let mut m = Map::new();
                // The file has no ids: the line number is stable for a given file.
                m.insert("id".into(), Value::String(format!("openbg-{line}")));
                m.insert("title".into(), Value::String(c[title].clone()));
                m.insert("brand".into(), Value::String(c[brand].clone()));
                let category: Vec<&str> = [c[coarse].trim(), c[fine].trim()]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect();
                m.insert("category".into(), Value::String(category.join("/")));
                m.insert("attributes".into(), Value::String(c[attrs].clone()));
                m
            }),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_days() {
        assert_eq!(parse_day("1970/01/01"), Some(0));
        assert_eq!(parse_day("2016/11/14"), Some(1_479_081_600));
        assert_eq!(parse_day("2016/13/14"), None);
        assert_eq!(parse_day("yesterday"), None);
    }

    #[test]
    fn jsonl_reports_bad_lines() {
        let records = jsonl(b"{\"id\":\"1\"}\n\nnot json\n[1]\n\xff\xfe\n");
        let lines: Vec<(usize, bool)> =
            records.iter().map(|r| (r.line, r.fields.is_ok())).collect();
        assert_eq!(lines, vec![(1, true), (3, false), (4, false), (5, false)]);
        assert!(records[3].fields.as_ref().unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn taobao_keeps_the_latest_snapshot() {
        let csv = "update_time,id,title,price,sale_count,comment_count,店名\n\
                   2016/11/05,A1,面霜,100,5,1,自然堂\n\
                   2016/11/06,A1,面霜,90,,1,自然堂\n\
                   2016/11/05,A2,口红,50,3,1,美宝莲\n";
        let records = taobao(csv.as_bytes()).unwrap();
        assert_eq!(records.len(), 2);
        let a1 = records
            .iter()
            .find(|r| r.fields.as_ref().unwrap()["id"] == "A1")
            .unwrap();
        let f = a1.fields.as_ref().unwrap();
        assert_eq!(f["price"], "90");
        assert!(!f.contains_key("sales"));
        assert_eq!(f["brand"], "自然堂");
        assert_eq!(a1.line, 3);
    }
}
